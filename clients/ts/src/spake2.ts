/**
 * SPAKE2 over Ed25519, byte-compatible with python-spake2 0.9 (`SPAKE2_A`,
 * `SPAKE2_B` with `ParamsEd25519`), which the Python client uses for pairing
 * (docs/protocol.md §19).
 *
 * No npm package interoperates with it: `spake2-wasm` exposes only the
 * symmetric mode with a text password and one identity, and `spake2` follows
 * the CFRG draft's transcript and password derivation (scrypt), which python-
 * spake2 does not. So this module is a thin composition of libsodium's
 * Ed25519 point operations (`crypto_scalarmult_ed25519_base_noclamp`,
 * `crypto_scalarmult_ed25519_noclamp`, `crypto_core_ed25519_add`/`sub`,
 * `crypto_core_ed25519_scalar_reduce`, `crypto_core_ed25519_is_valid_point`)
 * and @noble/hashes' SHA-256 and HKDF; it implements no group arithmetic of
 * its own. test/spake2.test.ts checks it byte for byte against python-spake2
 * (same entropy, same messages and keys) and in both directions.
 *
 * python-spake2's definitions (spake2/spake2.py, groups.py, ed25519_basic.py):
 *
 * ```
 * pw_scalar  = int_be(HKDF-SHA256(ikm = pw, salt = "", info = "SPAKE2 pw", L = 48)) mod L
 * xy_scalar  = int_be(entropy(64)) mod L
 * M, N       = arbitrary_element("M"), arbitrary_element("N")   (constants below)
 * side A:      msg = "A" ‖ E(xy·G + pw·M);   K = xy·(Y − pw·N)
 * side B:      msg = "B" ‖ E(xy·G + pw·N);   K = xy·(X − pw·M)
 * key        = SHA-256(SHA-256(pw) ‖ SHA-256(idA) ‖ SHA-256(idB) ‖ X ‖ Y ‖ E(K))
 * ```
 *
 * where X is side A's element and Y side B's (without the side byte). A peer
 * element must be a canonical point of the prime-order subgroup (libsodium's
 * check; python-spake2 also accepts a non-canonical encoding of such a point,
 * which no honest peer sends).
 */

import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import sodium from "libsodium-wrappers-sumo";

import { bytesEqual, concat, fromHex, utf8 } from "./bytes.js";
import { randomBytes } from "./crypto.js";
import { Code, KeyValidationError, UsageError } from "./errors.js";

/** python-spake2's `ParamsEd25519.M` (`arbitrary_element(b"M")`). */
export const M = fromHex("15cfd18e385952982b6a8f8c7854963b58e34388c8e6dae891db756481a02312");
/** python-spake2's `ParamsEd25519.N` (`arbitrary_element(b"N")`). */
export const N = fromHex("f04f2e7eb734b2a8f8b472eaf9c3c632576ac64aea650b496a8a20ff00e583c3");

/** A big-endian number of up to 64 bytes, reduced modulo the group order (as a libsodium scalar). */
function reduceBigEndian(be: Uint8Array): Uint8Array {
  if (be.length > 64) throw new UsageError("a SPAKE2 scalar source has at most 64 bytes");
  const le = new Uint8Array(64);
  le.set([...be].reverse());
  return sodium.crypto_core_ed25519_scalar_reduce(le);
}

/** python-spake2's `password_to_scalar` for Ed25519. */
export function passwordToScalar(password: Uint8Array): Uint8Array {
  return reduceBigEndian(hkdf(sha256, password, new Uint8Array(0), utf8("SPAKE2 pw"), 48));
}

/** One side of a SPAKE2 exchange: "A" (the pairing initiator) or "B" (the joiner). */
export class Spake2 {
  /** The message to send: the side byte and the blinded element (33 bytes). */
  readonly message: Uint8Array;
  private readonly element: Uint8Array;
  private readonly pw: Uint8Array;
  private readonly pwScalar: Uint8Array;
  private readonly xy: Uint8Array;
  private finished = false;

  /**
   * @param side "A" or "B".
   * @param password the password bytes (any bytes).
   * @param idA, idB the identities both sides agree on.
   * @param entropy TEST VECTORS ONLY: where the 64 bytes of the secret scalar come from.
   */
  constructor(readonly side: "A" | "B", password: Uint8Array, private readonly idA: Uint8Array,
    private readonly idB: Uint8Array, entropy: (n: number) => Uint8Array = randomBytes) {
    this.pw = new Uint8Array(password);
    this.pwScalar = passwordToScalar(password);
    this.xy = reduceBigEndian(entropy(64));
    const blinding = sodium.crypto_scalarmult_ed25519_noclamp(this.pwScalar, side === "A" ? M : N);
    this.element = sodium.crypto_core_ed25519_add(sodium.crypto_scalarmult_ed25519_base_noclamp(this.xy), blinding);
    this.message = concat(utf8(side), this.element);
  }

  /**
   * The 32-byte shared key, from the peer's message. Both sides get the same
   * key only with the same password (the caller's key confirmation tells).
   *
   * @throws KeyValidationError `bad_key`: a message from the same side, a
   *   reflection of ours, or not a point of the prime-order subgroup.
   * @throws UsageError called twice.
   */
  finish(peerMessage: Uint8Array): Uint8Array {
    if (this.finished) throw new UsageError("SPAKE2 finish() can be called only once");
    this.finished = true;
    const other = this.side === "A" ? "B" : "A";
    if (peerMessage.length !== 33 || String.fromCharCode(peerMessage[0]!) !== other) {
      throw new KeyValidationError(`the pairing peer sent an invalid SPAKE2 message (expected side ${other}, 33 bytes)`,
        Code.BAD_KEY);
    }
    const peer = peerMessage.slice(1);
    if (!sodium.crypto_core_ed25519_is_valid_point(peer)) {
      throw new KeyValidationError("the pairing peer sent an invalid SPAKE2 message (not a point of the group)", Code.BAD_KEY);
    }
    if (bytesEqual(peer, this.element)) {
      throw new KeyValidationError("the pairing peer reflected this device's SPAKE2 message", Code.BAD_KEY);
    }
    let k: Uint8Array;
    try {
      const unblind = sodium.crypto_scalarmult_ed25519_noclamp(this.pwScalar, this.side === "A" ? N : M);
      k = sodium.crypto_scalarmult_ed25519_noclamp(this.xy, sodium.crypto_core_ed25519_sub(peer, unblind));
    } catch {
      throw new KeyValidationError("the pairing peer sent an invalid SPAKE2 message (it gives the identity)", Code.BAD_KEY);
    }
    const [x, y] = this.side === "A" ? [this.element, peer] : [peer, this.element];
    return sha256(concat(sha256(this.pw), sha256(this.idA), sha256(this.idB), x, y, k));
  }
}
