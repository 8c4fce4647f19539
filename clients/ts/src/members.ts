/**
 * Other accounts as this device knows them, for spaces shared between
 * accounts (docs/protocol.md §21.7; the counterpart of
 * `sddsf.client.engine.members.Members`):
 *
 * * pinned keys: another account's signing and recovery key, pinned when this
 *   device joined a space of it (the owner, whose key the people compared) or
 *   when a `create`/`add` entry of a space log introduced it. The first pin
 *   wins; another key for a pinned account is refused;
 * * their registries, fetched from the relay with this device's session (the
 *   relay lets members of one space read each other's) and verified from
 *   genesis against the pinned key, never trusting the relay.
 *
 * Each account's registry is fetched again at most once per *generation*: a
 * new one starts whenever this device reads its own registry again
 * ({@link DeviceSession.refreshRegistry}), which every sync and every key
 * refresh does. The state is exported as one canonical value
 * ({@link Members.exportState}) that the device's store persists; on import
 * every registry is verified again from its pinned key.
 */

import { bytesEqual, fromHex, toHex } from "./bytes.js";
import { decode, encode, type Encodable } from "./cbor.js";
import { AuthorizationError, Code, DecodeError, NotFoundError, ProofError, RegistryError, SddsfError,
  UsageError } from "./errors.js";
import { AccountPublic } from "./identity.js";
import type { MembershipEntry } from "./membership.js";
import type { RelayClient } from "./relay.js";
import { verifyRegistry, type RegistryState } from "./registry.js";

/** What {@link Members} needs of the device. */
export interface MemberHost {
  /** This device's account (its own registry is the device's). */
  readonly account: AccountPublic;
  readonly relay: RelayClient;
  /** This device's verified registry, or null before the first fetch. */
  ownRegistry(): RegistryState | null;
  /** Fetch and verify this device's own registry. */
  refreshRegistry(): Promise<RegistryState>;
}

/** The version of {@link Members.exportState}'s value. */
const STATE_VERSION = 1;

/** Pinned keys of other accounts and their registries (see the module comment). */
export class Members {
  private readonly pins = new Map<string, AccountPublic>();
  private readonly regs = new Map<string, { state: RegistryState; entries: Uint8Array[] }>();
  /** Accounts whose registry was fetched in the current generation. */
  private readonly fresh = new Set<string>();

  constructor(private readonly host: MemberHost) {}

  /** A new generation: registries are fetched again (once) when next needed. */
  newGeneration(): void {
    this.fresh.clear();
  }

  private own(accountId: Uint8Array): boolean {
    return bytesEqual(accountId, this.host.account.accountId);
  }

  /** The account's pinned key (this device's own account's always), or undefined. */
  pinned(accountId: Uint8Array): AccountPublic | undefined {
    if (this.own(accountId)) return this.host.account;
    return this.pins.get(toHex(accountId));
  }

  /**
   * Pin another account's key (first pin wins).
   *
   * @throws ProofError the account id is pinned to another key.
   */
  pin(key: AccountPublic): void {
    const have = this.pinned(key.accountId);
    if (have === undefined) {
      this.pins.set(toHex(key.accountId), key);
    } else if (!have.signingKey.equals(key.signingKey) || !bytesEqual(have.recoveryKey, key.recoveryKey)) {
      throw new ProofError(`account ${toHex(key.accountId).slice(0, 12)} is pinned to another key than the one now shown; ` +
        "compare fingerprints again");
    }
  }

  /** The account's registry as this device verified it (undefined: not yet). */
  registryOf(accountId: Uint8Array): RegistryState | undefined {
    if (this.own(accountId)) return this.host.ownRegistry() ?? undefined;
    return this.regs.get(toHex(accountId))?.state;
  }

  /**
   * Fetch and verify the account's new registry entries from its pinned key
   * (once per generation).
   *
   * @throws ProofError no key is pinned for the account; RegistryError the
   *   entries do not verify, or are another account's.
   */
  async refresh(accountId: Uint8Array): Promise<RegistryState> {
    const k = toHex(accountId);
    const known = this.registryOf(accountId);
    if (this.fresh.has(k) && known !== undefined) return known;
    if (this.own(accountId)) {
      const state = await this.host.refreshRegistry();
      this.fresh.add(k);
      return state;
    }
    const key = this.pinned(accountId);
    if (key === undefined) throw new ProofError(`no key is pinned for account ${k.slice(0, 12)}`);
    const old = this.regs.get(k);
    const fetched = await this.host.relay.registry(accountId, old === undefined ? 0 : old.state.seq + 1);
    let state: RegistryState;
    const entries = old === undefined ? [] : [...old.entries];
    if (old === undefined) {
      state = verifyRegistry(fetched, key);
      entries.push(...fetched);
    } else {
      state = old.state;
      for (const entry of fetched) {
        const next = state.apply(entry);
        if (next !== state) entries.push(entry); // a repeat of a known entry changes nothing
        state = next;
      }
    }
    if (!bytesEqual(state.accountId, accountId)) {
      throw new RegistryError("the relay served another account's registry", Code.REGISTRY_INVALID);
    }
    this.regs.set(k, { state, entries });
    this.fresh.add(k);
    return state;
  }

  /**
   * Every listed account's registry (hex ids), refreshed; accounts without a
   * pinned key are skipped, and one the relay no longer lets this device read
   * (removed from every space it shares with this account) keeps what was
   * verified before.
   */
  async refreshAll(accounts: Iterable<string>): Promise<Map<string, RegistryState>> {
    const out = new Map<string, RegistryState>();
    for (const a of [...new Set(accounts)].sort()) {
      const id = fromHex(a);
      if (this.pinned(id) === undefined) continue;
      try {
        out.set(a, await this.refresh(id));
      } catch (e) {
        if (!(e instanceof AuthorizationError) && !(e instanceof NotFoundError)) throw e;
        const state = this.registryOf(id);
        if (state !== undefined) out.set(a, state);
      }
    }
    return out;
  }

  /**
   * Pin the keys that `create`/`add` entries introduce and refresh the
   * registries of every account they name, so that a fold can judge them.
   * Pinning before the fold is safe: a key is only ever used to verify that
   * account's own registry, and an entry the fold refuses makes nobody a member.
   */
  async prepare(entries: Iterable<MembershipEntry>): Promise<void> {
    const named = new Set<string>();
    for (const e of entries) {
      if (e.memberKey !== null && this.pinned(e.member) === undefined) this.pin(e.memberKey);
      named.add(toHex(e.signer));
      if (e.memberKey !== null) named.add(toHex(e.member));
    }
    await this.refreshAll(named);
  }

  /** The pinned keys and verified registry entries, as one canonical value. */
  exportState(): Uint8Array {
    const pins: Encodable[] = [...this.pins.values()].map((k) => [k.signingKey.raw, k.recoveryKey]);
    const regs: Encodable[] = [...this.regs].map(([a, r]) => [fromHex(a), [...r.entries]]);
    return encode(new Map<string, Encodable>([["v", STATE_VERSION], ["pins", pins], ["regs", regs]]));
  }

  /**
   * Restore a value of {@link exportState}: every registry is verified again
   * from genesis against its pinned key.
   *
   * @throws DecodeError a value of another version or shape (the store is damaged).
   */
  importState(data: Uint8Array): void {
    const m = decode(data, { maxSize: 1 << 30, maxDepth: 8, maxItems: 1 << 20 });
    if (!(m instanceof Map) || m.get("v") !== STATE_VERSION) {
      throw new DecodeError("the stored account keys of other members are of another version; this build cannot read them");
    }
    for (const [sign, recovery] of m.get("pins") as [Uint8Array, Uint8Array][]) this.pin(AccountPublic.fromKeys(sign, recovery));
    for (const [account, entries] of m.get("regs") as [Uint8Array, Uint8Array[]][]) {
      const key = this.pinned(account);
      if (key === undefined) continue;
      this.regs.set(toHex(account), { state: verifyRegistry(entries, key), entries: [...entries] });
    }
  }
}

/** Prefix of an account code: an account's two public keys, to pass on as text or QR. */
export const ACCOUNT_CODE_PREFIX = "sddsf-account-";
const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function base32Decode(text: string): Uint8Array | null {
  const out: number[] = [];
  let acc = 0;
  let bits = 0;
  for (const ch of text) {
    const v = BASE32.indexOf(ch);
    if (v < 0) return null;
    acc = (acc << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >> bits) & 0xff);
    }
    acc &= (1 << bits) - 1;
  }
  return new Uint8Array(out);
}

/**
 * The account of an account code (`sddsf-account-` and the base32 of
 * `[signing key, recovery key]`, as `sddsf.client.sharing.account_code`).
 *
 * @throws UsageError not an account code, or a damaged one.
 */
export function parseAccountCode(code: string): AccountPublic {
  const text = code.trim();
  if (!text.startsWith(ACCOUNT_CODE_PREFIX)) throw new UsageError(`an account code starts with '${ACCOUNT_CODE_PREFIX}'`);
  const raw = base32Decode(text.slice(ACCOUNT_CODE_PREFIX.length).toUpperCase());
  try {
    const keys = raw === null ? null : decode(raw);
    if (!Array.isArray(keys) || keys.length !== 2 || !(keys[0] instanceof Uint8Array) || !(keys[1] instanceof Uint8Array)) {
      throw new UsageError("not two keys");
    }
    return AccountPublic.fromKeys(keys[0], keys[1]);
  } catch (e) {
    if (e instanceof SddsfError) throw new UsageError("this account code is damaged; ask for it again");
    throw e;
  }
}

/** The 20 bytes a fingerprint (`XXXX-XXXX-…`, 8 groups of base32) shows, or null when `text` is not one. */
export function fingerprintBytes(text: string): Uint8Array | null {
  const compact = text.replace(/[\s-]/g, "").toUpperCase();
  if (compact.length !== 32) return null;
  return base32Decode(compact);
}

/**
 * The account named by an account code, or by a fingerprint that the relay
 * resolves (`GET /v1/accounts/by-fingerprint`): its answer is the account's
 * genesis registry entry, whose signature and id are checked against the
 * fingerprint (160 bits), so the relay cannot answer with another account's keys.
 *
 * @throws UsageError neither a code nor a fingerprint; NotFoundError no such
 *   account on this relay; ProofError the relay answered with another account.
 */
export async function resolveAccount(relay: RelayClient, text: string): Promise<AccountPublic> {
  if (text.trim().startsWith(ACCOUNT_CODE_PREFIX)) return parseAccountCode(text);
  const prefix = fingerprintBytes(text);
  if (prefix === null) {
    throw new UsageError("name the account by its fingerprint (XXXX-XXXX-..., as `sddsf account fingerprint` shows it) " +
      "or its account code");
  }
  const state = verifyRegistry([await relay.accountByFingerprint(prefix)], null);
  if (!bytesEqual(state.accountId.subarray(0, prefix.length), prefix)) {
    throw new ProofError("the relay answered with an account of another fingerprint", Code.PROOF_INVALID);
  }
  return state.account;
}

