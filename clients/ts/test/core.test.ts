/**
 * Unit tests of the core modules against the worked examples and tables of
 * docs/protocol.md: the canonical encoding's refusals (§2.3) and examples
 * (§2.2, §3), the errors table (§14), the identity values (§5.3), the
 * worked envelope example (§16.2) and the signed-request example (§17.3.2).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { before, describe, test } from "node:test";

import { b64, fromHex, toHex, unb64, utf8 } from "../src/bytes.js";
import { decode, DEFAULT_LIMITS, encode } from "../src/cbor.js";
import { Ed25519PublicKey, ready, seal, sealOpen, X25519KeyPair } from "../src/crypto.js";
import { decodeEnvelope } from "../src/envelope.js";
import * as errors from "../src/errors.js";
import { Code, errorFromWire, HTTP_STATUS, SddsfError } from "../src/errors.js";
import { AccountKeys, DeviceKeys, deviceIdOf, fingerprint } from "../src/identity.js";
import { labelled } from "../src/labels.js";
import { requestMessage, tokenHash } from "../src/auth.js";
import { HybridLogicalClock, HLCTimestamp } from "../src/clock.js";
import { VersionVector } from "../src/vv.js";
import { readFileSync } from "node:fs";
import { loadJson, OWN_VECTORS, REPO_ROOT } from "../testkit/kit.js";
import { codeOf } from "../testkit/kit.js";

before(ready);

describe("canonical encoding (§2)", () => {
  const refuse: [string, string, string][] = [
    ["non-shortest argument", "1817", "malformed"],
    ["non-shortest length", "5900020102", "malformed"],
    ["indefinite-length array", "9f01ff", "malformed"],
    ["reserved additional information", "1c", "malformed"],
    ["break byte", "ff", "malformed"],
    ["tag", "c11a514b67b0", "malformed"],
    ["float16", "f93c00", "malformed"],
    ["float64", "fb3ff0000000000000", "malformed"],
    ["undefined", "f7", "malformed"],
    ["two-byte simple value", "f820", "malformed"],
    ["invalid UTF-8", "62c328", "malformed"],
    ["UTF-8 surrogate", "63eda080", "malformed"],
    ["byte-string map key", "a1410101", "malformed"],
    ["boolean map key", "a1f501", "malformed"],
    ["unsorted keys", "a2616202616101", "malformed"],
    ["duplicate keys", "a2616101616102", "malformed"],
    ["length past the input", "5a0000ffff00", "malformed"],
    ["array count past the input", "9a0000ffff", "malformed"],
    ["map count past the input", "b90100" + "01".repeat(300), "malformed"],
    ["truncated item", "8201", "malformed"],
    ["trailing bytes", "0101", "malformed"],
    ["empty input", "", "malformed"],
    ["2^64 items", "9b" + "ff".repeat(8), "too_large"],
  ];
  for (const [name, hex, code] of refuse) {
    test(`refuses ${name} (${code})`, () => assert.equal(codeOf(() => decode(fromHex(hex))), code));
  }

  test("size, item and depth limits", () => {
    assert.equal(codeOf(() => decode(new Uint8Array(11), { maxSize: 10, maxDepth: 16, maxItems: 10 })), "too_large");
    const eleven = encode(Array.from({ length: 11 }, () => 0));
    assert.equal(codeOf(() => decode(eleven, { maxSize: 100, maxDepth: 16, maxItems: 10 })), "too_large");
    const deep = (n: number): Uint8Array => fromHex("81".repeat(n) + "00");
    assert.doesNotThrow(() => decode(deep(8), { ...DEFAULT_LIMITS, maxDepth: 8 }));
    assert.equal(codeOf(() => decode(deep(9), { ...DEFAULT_LIMITS, maxDepth: 8 })), "malformed");
  });

  test("RFC 8949 §4.2.1 key order with mixed keys: {1000: 1, 'a': 2}", () => {
    const bytes = encode(new Map<string | number, number>([["a", 2], [1000, 1]]));
    assert.equal(toHex(bytes), "a21903e8016161" + "02");
    assert.deepEqual(decode(bytes), new Map<string | number, number>([[1000, 1], ["a", 2]]));
  });

  test("integers across the whole range round-trip, big ones as bigints", () => {
    for (const v of [0, 23, 24, 255, 256, 65535, 65536, 2 ** 32, Number.MAX_SAFE_INTEGER, -1, -24, -25, -(2 ** 53) + 1]) {
      assert.equal(decode(encode(v)), v);
    }
    for (const v of [2n ** 53n, 2n ** 64n - 1n, -(2n ** 64n)]) assert.equal(decode(encode(v)), v);
    assert.equal(toHex(encode(2n ** 64n - 1n)), "1bffffffffffffffff");
    assert.equal(toHex(encode(-(2n ** 64n))), "3bffffffffffffffff");
    assert.equal(codeOf(() => encode(2n ** 64n)), "usage");
    assert.equal(codeOf(() => encode(1.5)), "usage");
    assert.equal(codeOf(() => encode(2 ** 60)), "usage");
  });

  test("a BOM at the start of a text string is kept", () => {
    assert.equal(decode(fromHex("63efbbbf")), "\ufeff");
  });

  test("labelled: the §3 example", () => {
    assert.equal(toHex(labelled("sddsf/v1/op/id", Uint8Array.of(1))), "826e73646473662f76312f6f702f69644101");
  });
});

describe("errors (§14)", () => {
  test("each code has its one class and HTTP status; unknown codes become malformed", () => {
    const cases: [string, string, number][] = [
      ["usage", "UsageError", 400], ["too_large", "DecodeError", 413], ["sig_invalid", "SignatureError", 401],
      ["chain_gap", "ChainError", 409], ["revoked", "AuthorizationError", 403], ["split_view", "ProofError", 409],
      ["rate_limited", "RateLimitedError", 429], ["unavailable", "UnavailableError", 503], ["internal", "InternalError", 500],
      ["policy_denied", "AuthorizationError", 403], ["replay", "AuthenticationError", 401],
    ];
    for (const [code, cls, status] of cases) {
      const e = errorFromWire(code, "m");
      assert.equal(e.constructor.name, cls);
      assert.equal(e.code, code);
      assert.equal(e.httpStatus, status);
      assert.ok(e instanceof SddsfError);
    }
    assert.equal(Object.keys(HTTP_STATUS).length, Object.keys(Code).length);
    const unknown = errorFromWire("from_the_future", "hello");
    assert.ok(unknown instanceof errors.DecodeError && unknown.code === "malformed" && /from_the_future/.test(unknown.message));
    assert.throws(() => new errors.SignatureError("x", Code.REVOKED), TypeError);
    assert.ok(new errors.ChainError("x", Code.CHAIN_GAP) instanceof errors.VerificationError);
  });

  test("the codes, classes and statuses are the Python reference's (src/sddsf/errors.py)", () => {
    const py = readFileSync(join(REPO_ROOT, "src", "sddsf", "errors.py"), "utf8");
    const table = [...py.matchAll(/^\s+Code\.([A-Z_]+): \((\w+), (\d+)\),$/gm)].map((m) => [m[1]!, m[2]!, Number(m[3])]);
    const values = new Map([...py.matchAll(/^\s+([A-Z_]+) = "([a-z_]+)"$/gm)].map((m) => [m[1]!, m[2]!]));
    assert.ok(table.length >= 40, `parsed ${table.length} codes`);
    assert.deepEqual(new Set(Object.values(Code)), new Set(values.values()));
    for (const [name, cls, status] of table) {
      const e = errorFromWire(values.get(name as string)!, "m");
      assert.deepEqual([e.constructor.name, e.httpStatus], [cls, status], `${name}`);
    }
  });
});

describe("identities and primitives (§4-§7)", () => {
  const ctx = loadJson(join(OWN_VECTORS, "envelope.json")).context;

  test("the account and device values of §5.3", () => {
    const account = AccountKeys.fromSecret(fromHex(ctx.account_secret));
    assert.equal(toHex(account.signing.publicKey.raw), "a785b3fd1e7980cc9175b0112d176d69527d85fe21f8899f241ca605fb6bec70");
    assert.equal(toHex(account.recovery.publicKey), "0302be1ad849b2045fa0d00769e276985bc17da5b64345c7262d15d871e4ba09");
    assert.equal(toHex(account.accountId), "1d1e4ff70d6faa08b0675953e1e6d67ad32118f63ce73338c2a7c441918b5c84");
    assert.equal(fingerprint(account.accountId), "DUPE-75YN-N6VA-RMDH-LFJ6-DZWW-PLJS-CGHW");
    assert.equal(toHex(deviceIdOf(fromHex("1d1281b76a5f90528f794f13b972a117fdfa460c2b953598ea912171f458ff4f"))),
      "0e75aa5ce7f2d73589c02c6d1d43cb298103f282b1060e37734c3e4ca0ee72eb");
    const laptop = ctx.devices.laptop;
    const keys = DeviceKeys.fromSeeds(fromHex(laptop.signing_seed), fromHex(laptop.kx_seed));
    assert.equal(toHex(keys.deviceId), laptop.device_id);
    assert.equal(codeOf(() => DeviceKeys.fromSeeds(fromHex(laptop.kx_seed), fromHex(laptop.kx_seed))), "usage");
    assert.equal(codeOf(() => Ed25519PublicKey.fromBytes(new Uint8Array(32))), "bad_key");
  });

  test("sealed boxes: libsodium's format, reproducible from the ephemeral seed", () => {
    const kp = X25519KeyPair.fromSeed(new Uint8Array(32).fill(7));
    const box = seal(kp.publicKey, utf8("epoch key"), new Uint8Array(32).fill(9));
    assert.deepEqual(seal(kp.publicKey, utf8("epoch key"), new Uint8Array(32).fill(9)), box);
    assert.equal(box.length, 48 + 9);
    assert.deepEqual(sealOpen(kp, box), utf8("epoch key"));
    const other = X25519KeyPair.fromSeed(new Uint8Array(32).fill(8));
    assert.equal(codeOf(() => sealOpen(other, box)), "decrypt_failed");
    assert.equal(codeOf(() => sealOpen(kp, box.slice(0, 47))), "decrypt_failed");
    assert.equal(codeOf(() => seal(new Uint8Array(32), utf8("x"), new Uint8Array(32))), "bad_key");
  });

  test("version vectors refuse every non-canonical wire form", () => {
    const a = new Uint8Array(32).fill(1);
    const b = new Uint8Array(32).fill(2);
    const vv = new VersionVector([[b, 2n], [a, 1n]]);
    assert.deepEqual(vv.toWire().map(([id, s]) => [toHex(id), s]), [[toHex(a), 1n], [toHex(b), 2n]]);
    assert.equal(codeOf(() => VersionVector.fromWire([[b, 1], [a, 1]], "d", 32, 10)), "malformed");
    assert.equal(codeOf(() => VersionVector.fromWire([[a, 1], [a, 2]], "d", 32, 10)), "malformed");
    assert.equal(codeOf(() => VersionVector.fromWire([[a, 0]], "d", 32, 10)), "malformed");
    assert.equal(codeOf(() => VersionVector.fromWire([[a, true]], "d", 32, 10)), "malformed");
    assert.equal(codeOf(() => VersionVector.fromWire([[a, 1], [b, 1]], "d", 32, 1)), "too_large");
    assert.equal(vv.compare(new VersionVector([[a, 1n]])), "after");
    assert.equal(new VersionVector([[a, 2n]]).compare(vv), "concurrent");
  });

  test("the hybrid logical clock never goes back and bounds drift", () => {
    const clock = new HybridLogicalClock(null, 600_000);
    assert.deepEqual(clock.tick(1000).toWire(), [1000, 0]);
    assert.deepEqual(clock.tick(900).toWire(), [1000, 1]);
    assert.deepEqual(clock.observe(new HLCTimestamp(5000, 3), 2000).toWire(), [5000, 4]);
    assert.equal(codeOf(() => clock.observe(new HLCTimestamp(700_001), 0)), "clock_skew");
    assert.equal(codeOf(() => HLCTimestamp.fromWire([2 ** 48, 0], "ts")), "malformed");
  });
});

describe("worked examples", () => {
  test("§16.2: envelope valid case 1", () => {
    const env = decodeEnvelope(fromHex(loadJson(join(OWN_VECTORS, "envelope.json")).valid[0].envelope));
    assert.equal(env.headerBytes.length, 210);
    assert.equal(env.header.version, 2);
    assert.equal(env.header.reg, 0n);
    assert.equal(env.raw.length, 308);
    assert.equal(toHex(env.opId), "9213d26fcd50de174bd61f87b3314e3d115d1d1beff84242af08a10fe9c61b12");
    assert.equal(toHex(env.ciphertext), "bccc59a773f52dd6b69df28e3c7d86bd228130298a0350c10aa8");
    assert.equal(env.signedMessage().length, 263);
    assert.equal(toHex(env.signature), "11ea817ebbc172dad6f3e09e7d3d0f14dfed1309d0dd900b5ee956982caabb8b" +
      "ce5affd51382c88cb565053deb8e4bff0ed11eb99179f83a594565162d58da0e");
  });

  test("§17.3.2: the signed-request message", () => {
    const digest = tokenHash(new Uint8Array(32));
    assert.equal(toHex(digest), "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925");
    const msg = requestMessage("post", "/v1/ws/ticket", utf8("{}"), new Uint8Array(16), 1767225600000, digest);
    assert.equal(msg.length, 135);
    assert.equal(toHex(msg), "87" + "74" + toHex(utf8("sddsf/v1/request/sig")) + "64" + toHex(utf8("POST")) + "6d" +
      toHex(utf8("/v1/ws/ticket")) + "5820" + "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a" + "50" +
      "00".repeat(16) + "1b0000019b76daa800" + "5820" + "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925");
  });

  test("§17.1: URL-safe base64 with padding, decoded strictly", () => {
    assert.equal(b64(fromHex("fbff")), "-_8=");
    assert.deepEqual(unb64("-_8="), fromHex("fbff"));
    for (const bad of ["-_8", "+/8=", "-_8==", " -_8=", "-_=8"]) assert.equal(codeOf(() => unb64(bad)), "malformed");
    assert.equal(codeOf(() => unb64("AAAA", "nonce", 16)), "malformed");
  });
});
