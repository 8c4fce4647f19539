/**
 * Pairing version 2 (docs/protocol.md §19; mirrors `sddsf.protocol.pairing`
 * and the joiner's side of `sddsf.client.pairing`): this device joins an
 * account with the short code (or the `sddsf://pair` link) that an approving
 * device shows (`sddsf device add`).
 *
 * Messages through the relay's mailbox (canonical CBOR maps, `v` = 2),
 * strictly alternating, joiner first:
 *
 * ```
 * 0 joiner    commit  h = tagged_hash(PAIRING_COMMIT, m_joiner, n)
 * 1 initiator pake    m = its SPAKE2 message
 * 2 joiner    reveal  m, n, c (confirmation tag), box {sign, kx, name}
 * 3 initiator offer   c, box {body, account_sign, account_recovery, relay_key}
 * 4 joiner    cosign  box {cosig}
 * 5 initiator done    box {seq}
 * ```
 *
 * Both screens show five words derived from the SPAKE2 key and the
 * transcript; the person compares them before this device countersigns
 * anything. The commitment makes the comparison worth doing: whoever sits in
 * the middle must fix its message before it sees the other side's.
 */

import { wordlist as ENGLISH } from "@scure/bip39/wordlists/english.js";

import { bytesEqual, concat, constantTimeEqual } from "./bytes.js";
import { decode, encode, isMap, type CborValue, type Encodable } from "./cbor.js";
import { AEAD_NONCE_SIZE, aeadDecrypt, aeadEncrypt, Ed25519PublicKey, hkdfSha256, randomBytes } from "./crypto.js";
import { AuthenticationError, Code, ConflictError, DecodeError, DecryptError, SddsfError, UsageError } from "./errors.js";
import { AccountPublic, DeviceKeys, fingerprint } from "./identity.js";
import * as labels from "./labels.js";
import { labelled, taggedHash } from "./labels.js";
import { countersignBody } from "./registry.js";
import { PAIRING_VERSION, type RelayClient } from "./relay.js";
import { expectMap, Fields } from "./schema.js";
import { Spake2 } from "./spake2.js";
import { utf8 } from "./bytes.js";

export { PAIRING_VERSION };
export const MIN_CODE_WORDS = 3;
export const MAX_CODE_WORDS = 8;
export const CHECK_BITS = 6;
export const NAMEPLATE_MAX = 999_999;
export const COMMIT_NONCE_SIZE = 32;
export const TOKEN_SIZE = 32;
const WORD_BITS = 11;
const SAS_WORDS = 5;
const MAX_MESSAGE = 64 * 1024;
const MAX_CODE_TEXT = 200;
const OLD_CODE_CHARS = 39;
/** The SPAKE2 identities of the two sides. */
export const ID_A = utf8("sddsf/v2/pairing/initiator");
export const ID_B = utf8("sddsf/v2/pairing/joiner");
/** The word list of codes and of the words both screens show (BIP39 English). */
export const WORDS: readonly string[] = ENGLISH;

/** Secret bits a code of `words` words carries (the rest is the checksum). */
export function passwordBits(words: number): number {
  return WORD_BITS * words - CHECK_BITS;
}

/** What a pairing code carries: the mailbox number and the secret. */
export class PairingCode {
  constructor(
    readonly nameplate: number,
    readonly secret: bigint,
    readonly words: number,
  ) {}

  private secretBytes(): Uint8Array {
    const n = Math.ceil(passwordBits(this.words) / 8);
    const out = new Uint8Array(n);
    let v = this.secret;
    for (let i = n - 1; i >= 0; i--) {
      out[i] = Number(v & 0xffn);
      v >>= 8n;
    }
    return out;
  }

  /** The checksum the code's last bits carry. */
  check(): number {
    return taggedHash(labels.PAIRING_CODE, "check", this.nameplate, this.words, this.secretBytes())[0]! >> (8 - CHECK_BITS);
  }

  /** The SPAKE2 password: bound to the mailbox number and the word count. */
  get password(): Uint8Array {
    return labelled(labels.PAIRING_CODE, "password", this.nameplate, this.words, this.secretBytes());
  }
}

/**
 * Parse a pairing code typed by a person (case, spaces and dashes are loose).
 *
 * @throws UsageError not a pairing code, a word not in the list, an old-style
 *   (version 1) code, or a typo (the checksum does not match).
 */
export function decodeCode(code: string): PairingCode {
  const text = code.trim();
  const compact = text.replace(/[-\s]/g, "").toUpperCase();
  if (compact.length === OLD_CODE_CHARS && /^[A-Z2-7]+$/.test(compact) && !/^\d/.test(text)) {
    throw new UsageError("that is an old-style pairing code (from sddsf before pairing version 2): update sddsf on the " +
      "device that showed it, then start again with `sddsf device add`");
  }
  const parts = text.toLowerCase().split(/[\s-]+/).filter((p) => p);
  if (text.length > MAX_CODE_TEXT || parts.length < 2 || !/^\d{1,6}$/.test(parts[0]!) ||
    parts.length - 1 < MIN_CODE_WORDS || parts.length - 1 > MAX_CODE_WORDS) {
    throw new UsageError("that is not a pairing code: it looks like 7-crossover-clockwork-pilot (a number, then the " +
      "words `sddsf device add` shows)");
  }
  const index = new Map(WORDS.map((w, i) => [w, i]));
  let value = 0n;
  for (const word of parts.slice(1)) {
    const i = index.get(word);
    if (i === undefined) {
      throw new UsageError(`'${word}' is not a pairing word. Check the code against the other device's screen`);
    }
    value = (value << BigInt(WORD_BITS)) | BigInt(i);
  }
  const parsed = new PairingCode(Number(parts[0]), value >> BigInt(CHECK_BITS), parts.length - 1);
  if (parsed.nameplate < 1 || parsed.nameplate > NAMEPLATE_MAX || BigInt(parsed.check()) !== (value & ((1n << BigInt(CHECK_BITS)) - 1n))) {
    throw new UsageError("the pairing code has a typo (its checksum does not match): check the number and every word " +
      "against the other device's screen");
  }
  return parsed;
}

/**
 * `[relayUrl, code]` of a pairing link (`sddsf://pair?relay=<url>&code=<code>`),
 * or null when `text` is not an `sddsf:` link.
 *
 * @throws UsageError an `sddsf:` link that is not a well-formed pairing link.
 */
export function parseUri(text: string): [string, string] | null {
  const t = text.trim();
  if (!t.toLowerCase().startsWith("sddsf:")) return null;
  const bad = new UsageError("that is not a pairing link: it looks like sddsf://pair?relay=https://...&code=7-crossover-clockwork-pilot");
  const m = /^sddsf:\/\/pair\/?\?([^#]*)$/i.exec(t);
  if (m === null) throw bad;
  const query = new URLSearchParams(m[1]!);
  const keys = [...query.keys()];
  if (keys.length !== 2 || new Set(keys).size !== 2 || !query.has("relay") || !query.has("code")) throw bad;
  const relay = query.get("relay")!;
  let scheme: string;
  try {
    scheme = new URL(relay).protocol;
  } catch {
    throw bad;
  }
  if (scheme !== "http:" && scheme !== "https:") throw new UsageError("the pairing link names a relay that is not an http(s) URL");
  return [relay, query.get("code")!];
}

/** The joiner's commitment to its SPAKE2 message (message 0). */
export function commitment(joinerMsg: Uint8Array, nonce: Uint8Array): Uint8Array {
  if (nonce.length !== COMMIT_NONCE_SIZE) throw new UsageError("a pairing commitment nonce has 32 bytes");
  return taggedHash(labels.PAIRING_COMMIT, joinerMsg, nonce);
}

/** Everything derived from the SPAKE2 key and the transcript. */
export interface PairingKeys {
  readonly send: Uint8Array;
  readonly receive: Uint8Array;
  readonly myConfirm: Uint8Array;
  readonly peerConfirm: Uint8Array;
  /** The five words both screens show. */
  readonly sas: readonly string[];
}

/** Derive the channel keys, confirmation tags and words for `role` (the transcript binds the version, mailbox, commitment and both messages). */
export function pairingKeys(role: "initiator" | "joiner", key: Uint8Array, a: { channelId: Uint8Array; commitment: Uint8Array;
  initiatorMsg: Uint8Array; joinerMsg: Uint8Array }): PairingKeys {
  const transcript = taggedHash(labels.PAIRING_KEY, PAIRING_VERSION, a.channelId, a.commitment, a.initiatorMsg, a.joinerMsg);
  const direction = (sender: string): Uint8Array => hkdfSha256(key, utf8(labels.PAIRING_KEY), labelled(labels.PAIRING_KEY, sender, transcript));
  const confirm = (sender: string): Uint8Array => taggedHash(labels.PAIRING_CONFIRM, key, sender, transcript);
  let sas = 0n;
  for (const b of taggedHash(labels.PAIRING_SAS, key, transcript)) sas = (sas << 8n) | BigInt(b);
  const words = Array.from({ length: SAS_WORDS }, (_, i) => WORDS[Number((sas >> BigInt(WORD_BITS * i)) & 0x7ffn)]!);
  const peer = role === "initiator" ? "joiner" : "initiator";
  return { send: direction(role), receive: direction(peer), myConfirm: confirm(role), peerConfirm: confirm(peer), sas: words };
}

/** A mailbox message of type `kind`; `payload` is sealed under `key` (`extra` travels in the clear). */
export function sealMessage(kind: string, key: Uint8Array | null, opts: { payload?: ReadonlyMap<string, Encodable>;
  extra?: ReadonlyMap<string, Encodable> } = {}): Uint8Array {
  const msg = new Map<string, Encodable>([["v", PAIRING_VERSION], ["t", kind], ...(opts.extra ?? [])]);
  if (opts.payload !== undefined) {
    if (key === null) throw new UsageError("a sealed pairing message needs a key");
    const nonce = randomBytes(AEAD_NONCE_SIZE);
    msg.set("box", concat(nonce, aeadEncrypt(key, nonce, encode(new Map(opts.payload)), labelled(labels.PAIRING_KEY, kind))));
  }
  return encode(msg);
}

/**
 * Decode a mailbox message of the expected `kind`; open its box with `key`.
 *
 * @returns the outer fields and the opened payload (empty without a box).
 * @throws DecodeError malformed, too large, another version
 *   (`unsupported_version`) or another type; DecryptError the box does not open.
 */
export function openMessage(data: Uint8Array, kind: string, key: Uint8Array | null, clear: readonly string[] = []): [Fields, Fields] {
  if (data.length > MAX_MESSAGE) throw new DecodeError("pairing message too large", Code.TOO_LARGE);
  const value = decode(data);
  if (isMap(value) && value.get("v") !== PAIRING_VERSION) {
    throw new DecodeError(`the other device speaks pairing version ${String(value.get("v"))}, this one ${PAIRING_VERSION}: ` +
      "update sddsf on both devices", Code.UNSUPPORTED_VERSION);
  }
  if (isMap(value) && value.get("t") !== kind) throw new DecodeError(`expected a pairing '${kind}' message, got '${String(value.get("t"))}'`);
  const outer = expectMap(value, "pairing message", ["v", "t", ...clear, ...(key !== null ? ["box"] : [])]);
  if (key === null) return [outer, new Fields(new Map(), `pairing ${kind}`)];
  const box = outer.bytes("box", { maxSize: MAX_MESSAGE });
  if (box.length < AEAD_NONCE_SIZE + 16) throw new DecodeError("pairing message box is too short");
  const inner = decode(aeadDecrypt(key, box.slice(0, AEAD_NONCE_SIZE), box.slice(AEAD_NONCE_SIZE), labelled(labels.PAIRING_KEY, kind)));
  if (!isMap(inner)) throw new DecodeError("pairing payload: expected a map");
  return [outer, new Fields(inner, `pairing ${kind}`)];
}

/** What this screen shows before anything is committed: the words, and this device's name and fingerprint. */
export interface PairingCheck {
  readonly words: readonly string[];
  readonly name: string;
  readonly fingerprint: string;
}

/** What the joiner learns over the authenticated channel. */
export interface Joined {
  readonly keys: DeviceKeys;
  readonly account: AccountPublic;
  /** The relay key the approving device pinned (empty: it had none). */
  readonly relayKey: Uint8Array;
  readonly name: string;
  readonly relayUrl: string;
}

/** Options of {@link joinAccount}. */
export interface JoinOptions {
  /** Called with the words right after the key exchange; the person says whether they match. */
  readonly confirm: (check: PairingCheck) => boolean | Promise<boolean>;
  /**
   * Called with what to store before this device's countersignature leaves
   * (write-ahead: a registered device never lacks its keys). Throwing stops
   * the pairing.
   */
  readonly persist: (joined: Joined) => Promise<void>;
  readonly timeoutMs?: number;
  readonly pollMs?: number;
  readonly sleep?: (ms: number) => Promise<void>;
}

class Mailbox {
  timedOut = false;
  private after = -1;
  private mine = 0; // the joiner posts 0, 2, 4

  constructor(
    private readonly relay: RelayClient,
    readonly channel: Uint8Array,
    private readonly token: Uint8Array,
    private readonly deadline: number,
    private readonly pollMs: number,
    private readonly sleep: (ms: number) => Promise<void>,
  ) {}

  async post(message: Uint8Array): Promise<void> {
    await this.relay.postChannel(this.channel, this.token, this.mine, message);
    this.mine += 2;
  }

  async next(what: string): Promise<Uint8Array> {
    for (;;) {
      for (const [index, sender, body] of await this.relay.readChannel(this.channel, this.token, this.after)) {
        this.after = index;
        if (sender !== "joiner") return body;
      }
      if (Date.now() >= this.deadline) {
        this.timedOut = true;
        throw new UsageError(`pairing timed out waiting for the other device's ${what}; start again with a new code`);
      }
      await this.sleep(this.pollMs);
    }
  }

  async burn(reason: string): Promise<void> {
    try {
      await this.relay.burnChannel(this.channel, this.token, reason);
    } catch (e) {
      if (!(e instanceof SddsfError)) throw e; // best effort: the channel expires anyway
    }
  }
}

function openConfirmed(data: Uint8Array, kind: string, keys: PairingKeys, clear: readonly string[] = ["c"]): Fields {
  // Under a wrong code the box does not open either: both mean the same to the person.
  let outer: Fields;
  let payload: Fields;
  try {
    [outer, payload] = openMessage(data, kind, keys.receive, clear);
  } catch (e) {
    if (e instanceof DecryptError) throw mismatch();
    throw e;
  }
  if (!constantTimeEqual(outer.bytes("c", { size: 32 }), keys.peerConfirm)) throw mismatch();
  return payload;
}

function mismatch(): AuthenticationError {
  return new AuthenticationError("the pairing code did not match on the other device (a wrong code or an interception); " +
    "the code is burnt: start again with a new code", Code.UNAUTHENTICATED);
}

function checkOffer(body: Uint8Array, account: AccountPublic, keys: DeviceKeys, name: string): void {
  // The entry this device countersigns must add exactly this device, with this
  // name, to the account whose keys came over the authenticated channel.
  let value: CborValue;
  try {
    value = decode(body);
  } catch {
    value = null;
  }
  if (!isMap(value)) throw new UsageError("the other device offered a malformed registry entry");
  let device = value.get("device");
  let type = value.get("type");
  const action = value.get("action");
  if (type === "propose" && isMap(action) && action.get("type") === "add") {
    device = action.get("device"); // a proposal to add it (the account needs approvals)
    type = "add";
  }
  const acct = value.get("account");
  const ok = type === "add" && acct instanceof Uint8Array && bytesEqual(acct, account.accountId) && isMap(device) &&
    device.get("sign") instanceof Uint8Array && bytesEqual(device.get("sign") as Uint8Array, keys.signing.publicKey.raw) &&
    device.get("kx") instanceof Uint8Array && bytesEqual(device.get("kx") as Uint8Array, keys.kx.publicKey) &&
    device.get("name") === name;
  if (!ok) throw new UsageError("the other device offered a registry entry that does not add this device to its account; pairing stopped");
}

/**
 * Join an account with the code (or link) another device shows: the
 * joiner's side of the mailbox up to the approver's "done". The caller then
 * checks the registry (listed: joined).
 *
 * @param relay a client of the relay the code is for (no device identity needed).
 * @throws UsageError a malformed code or typo, a timeout, words not confirmed;
 *   AuthenticationError a wrong code; NotFoundError no such mailbox;
 *   ConflictError the code was used or the other side stopped; SddsfError the
 *   relay or the other device misbehaved.
 */
export async function joinAccount(relay: RelayClient, relayUrl: string, code: string, name: string,
  opts: JoinOptions): Promise<Joined> {
  const parsed = decodeCode(code); // a typo never reaches the relay
  if (!name || [...name].length > 128) throw new UsageError("a device name has 1 to 128 characters");
  const keys = DeviceKeys.fromSeeds(randomBytes(32), randomBytes(32));
  const token = randomBytes(TOKEN_SIZE);
  const [channel] = await relay.claimChannel(parsed.nameplate, token);
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const box = new Mailbox(relay, channel, token, Date.now() + (opts.timeoutMs ?? 600_000), opts.pollMs ?? 500, sleep);
  let declined = false;
  let joined: Joined;
  let cosign: Uint8Array;
  try {
    const pk = await exchange(box, parsed, channel, keys, name);
    if (!(await opts.confirm({ words: pk.sas, name, fingerprint: fingerprint(keys.deviceId) }))) {
      declined = true;
      throw new UsageError("pairing cancelled: the words were not confirmed; nothing was added");
    }
    const offer = openConfirmed(await box.next("approval"), "offer", pk);
    const body = offer.bytes("body", { maxSize: 64 * 1024 });
    const account = AccountPublic.fromKeys(offer.bytes("account_sign", { size: 32 }), offer.bytes("account_recovery", { size: 32 }));
    checkOffer(body, account, keys, name);
    const relayKey = offer.bytes("relay_key", { maxSize: 32 });
    if (relayKey.length) Ed25519PublicKey.fromBytes(relayKey);
    joined = { keys, account, relayKey, name, relayUrl };
    await opts.persist(joined); // write-ahead, before the countersignature leaves
    cosign = sealMessage("cosign", pk.send, { payload: new Map([["cosig", countersignBody(body, keys)]]) });
    await box.post(cosign);
    openMessage(await box.next("confirmation"), "done", pk.receive);
  } catch (e) {
    const reason = declined ? "rejected" : box.timedOut ? "timeout"
      : e instanceof AuthenticationError || e instanceof DecryptError ? "mismatch" : "failed";
    // After the countersignature the entry may exist: the registry decides (the caller checks it).
    await box.burn(reason);
    throw e instanceof ConflictError ? new ConflictError(`${e.message} (the other device stopped the pairing)`) : e;
  }
  await box.burn("done");
  return joined;
}

async function exchange(box: Mailbox, parsed: PairingCode, channel: Uint8Array, keys: DeviceKeys,
  name: string): Promise<PairingKeys> {
  // Messages 0-2: commit, read the initiator's SPAKE2 message, reveal.
  const spake = new Spake2("B", parsed.password, ID_A, ID_B);
  const nonce = randomBytes(COMMIT_NONCE_SIZE);
  const committed = commitment(spake.message, nonce);
  await box.post(sealMessage("commit", null, { extra: new Map([["h", committed]]) }));
  // This side's message is revealed only once the initiator's is fixed.
  const [pake] = openMessage(await box.next("key exchange"), "pake", null, ["m"]);
  const initiatorMsg = pake.bytes("m", { maxSize: 64 });
  const pk = pairingKeys("joiner", spake.finish(initiatorMsg), { channelId: channel, commitment: committed, initiatorMsg,
    joinerMsg: spake.message });
  await box.post(sealMessage("reveal", pk.send, {
    extra: new Map<string, Encodable>([["m", spake.message], ["n", nonce], ["c", pk.myConfirm]]),
    payload: new Map<string, Encodable>([["sign", keys.signing.publicKey.raw], ["kx", keys.kx.publicKey], ["name", name]]) }));
  return pk;
}
