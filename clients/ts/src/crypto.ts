/**
 * Thin, typed wrappers over the cryptographic libraries (docs/protocol.md §4;
 * mirrors `sddsf.crypto`). We implement no primitive:
 *
 * * Ed25519, X25519, sealed boxes, XChaCha20-Poly1305, BLAKE2b: libsodium
 *   (libsodium-wrappers-sumo), the library the Python reference uses through
 *   PyNaCl, so every client and the relay take the same decision on every
 *   Ed25519 edge case (the CCTV and Wycheproof vector tests pin it).
 * * SHA-256 and HKDF-SHA256 (RFC 5869): @noble/hashes.
 *
 * Ed25519 policy (§4.4): a public key is accepted only through
 * {@link Ed25519PublicKey.fromBytes} (`crypto_core_ed25519_is_valid_point`:
 * canonical, on the curve, not of small order, in the prime-order subgroup);
 * a signature is checked with libsodium's `crypto_sign_verify_detached`
 * (refuses S ≥ L, small-order or non-canonical R; cofactorless equation).
 *
 * Call and await {@link ready} once before using any function here.
 */

import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import sodium from "libsodium-wrappers-sumo";

import { concat, toHex } from "./bytes.js";
import { DecryptError, KeyValidationError, SignatureError, UsageError } from "./errors.js";

/** Size of an Ed25519 signature. */
export const ED25519_SIG_SIZE = 64;
/** XChaCha20-Poly1305 key size. */
export const AEAD_KEY_SIZE = 32;
/** XChaCha20-Poly1305 nonce size. */
export const AEAD_NONCE_SIZE = 24;
/** Poly1305 tag size. */
export const AEAD_TAG_SIZE = 16;
/** Ephemeral public key (32) + Poly1305 tag (16) of a sealed box. */
export const SEAL_OVERHEAD = 48;

const P25519 = (1n << 255n) - 19n;
// A clamped scalar is a multiple of the cofactor 8, so multiplying any point of
// small order by it gives the identity, which libsodium reports as an error.
const PROBE_SCALAR = concat(Uint8Array.of(0x48), new Uint8Array(30), Uint8Array.of(0x40));

let isReady = false;

/** Load libsodium (WebAssembly). Every other function needs it. */
export async function ready(): Promise<void> {
  await sodium.ready;
  isReady = true;
}

function lib(): typeof sodium {
  if (!isReady) throw new UsageError("call and await crypto.ready() before using SDDSF crypto");
  return sodium;
}

/** `n` bytes from the platform's CSPRNG (WebCrypto `getRandomValues`). */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) globalThis.crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  return out;
}

// --------------------------------------------------------------------- hashes

/** BLAKE2b with a 32-byte output (no key, no personalisation). */
export function blake2b256(data: Uint8Array): Uint8Array {
  return lib().crypto_generichash(32, data, null);
}

/** BLAKE2b with a `size`-byte output (libsodium `crypto_generichash`). */
export function blake2b(data: Uint8Array, size: number): Uint8Array {
  return lib().crypto_generichash(size, data, null);
}

/** SHA-256 (the RFC 9162 log hash). */
export function sha256(data: Uint8Array): Uint8Array {
  // libsodium's is 2-4× faster (the log hashes every leaf and node); the same
  // function, so before ready() the pure-JS one serves.
  return isReady ? sodium.crypto_hash_sha256(data) : nobleSha256(data);
}

/** HKDF-SHA256 (RFC 5869), extract then expand. */
export function hkdfSha256(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length = 32): Uint8Array {
  return hkdf(nobleSha256, ikm, salt, info, length);
}

// -------------------------------------------------------------------- Ed25519

/** A validated Ed25519 public key (canonical, prime-order subgroup). */
export class Ed25519PublicKey {
  private constructor(readonly raw: Uint8Array) {}

  /**
   * Validate and wrap a 32-byte public key.
   *
   * @throws KeyValidationError wrong length, non-canonical, low-order or mixed-order point.
   */
  static fromBytes(raw: Uint8Array): Ed25519PublicKey {
    if (raw.length !== 32) throw new KeyValidationError(`an Ed25519 public key is 32 bytes, got ${raw.length}`);
    if (!lib().crypto_core_ed25519_is_valid_point(raw)) {
      throw new KeyValidationError(
        "Ed25519 public key is not a canonical point of prime order (low-order and non-canonical keys are refused)",
      );
    }
    return new Ed25519PublicKey(new Uint8Array(raw));
  }

  /**
   * Check `signature` over `message`.
   *
   * @throws SignatureError for every kind of failure (one opaque error).
   */
  verify(message: Uint8Array, signature: Uint8Array): void {
    if (signature.length !== ED25519_SIG_SIZE) throw new SignatureError("signature is not 64 bytes");
    let ok = false;
    try {
      ok = lib().crypto_sign_verify_detached(signature, message, this.raw);
    } catch {
      ok = false;
    }
    if (!ok) throw new SignatureError("signature does not verify");
  }

  /** Boolean form of {@link verify}. */
  isValidSignature(message: Uint8Array, signature: Uint8Array): boolean {
    try {
      this.verify(message, signature);
      return true;
    } catch (e) {
      if (e instanceof SignatureError) return false;
      throw e;
    }
  }

  /** Whether two keys are the same. */
  equals(other: Ed25519PublicKey): boolean {
    return toHex(this.raw) === toHex(other.raw);
  }
}

/** An Ed25519 signing key built deterministically from a 32-byte seed. */
export class Ed25519SigningKey {
  private constructor(
    readonly seed: Uint8Array,
    private readonly secret: Uint8Array,
    readonly publicKey: Ed25519PublicKey,
  ) {}

  /** Derive the key pair from `seed` (32 bytes; keep it secret). */
  static fromSeed(seed: Uint8Array): Ed25519SigningKey {
    if (seed.length !== 32) throw new UsageError("an Ed25519 seed is 32 bytes");
    const kp = lib().crypto_sign_seed_keypair(seed);
    return new Ed25519SigningKey(new Uint8Array(seed), kp.privateKey, Ed25519PublicKey.fromBytes(kp.publicKey));
  }

  /** Detached Ed25519 signature (64 bytes). */
  sign(message: Uint8Array): Uint8Array {
    return lib().crypto_sign_detached(message, this.secret);
  }

  /** Never print the secret. */
  toString(): string {
    return `Ed25519SigningKey(public=${toHex(this.publicKey.raw)})`;
  }
}

// --------------------------------------------------------------------- X25519

/**
 * Refuse X25519 public keys that are non-canonical or of small order (§4.5).
 *
 * @throws KeyValidationError wrong length, u ≥ 2^255 − 19, or a small-order point.
 */
export function validateX25519Public(raw: Uint8Array): Uint8Array {
  if (raw.length !== 32) throw new KeyValidationError(`an X25519 public key is 32 bytes, got ${raw.length}`);
  let u = 0n;
  for (let i = 31; i >= 0; i--) u = (u << 8n) | BigInt(raw[i]!);
  if (u >= P25519) throw new KeyValidationError("X25519 public key is not canonically encoded");
  try {
    lib().crypto_scalarmult(PROBE_SCALAR, raw);
  } catch {
    throw new KeyValidationError("X25519 public key is a small-order point");
  }
  return new Uint8Array(raw);
}

/** An X25519 key pair derived deterministically from a 32-byte seed. */
export class X25519KeyPair {
  private constructor(
    readonly secret: Uint8Array,
    readonly publicKey: Uint8Array,
    readonly seed: Uint8Array,
  ) {}

  /** libsodium `crypto_box_seed_keypair` (secret = SHA-512(seed)[:32]). */
  static fromSeed(seed: Uint8Array): X25519KeyPair {
    if (seed.length !== 32) throw new UsageError("an X25519 seed is 32 bytes");
    const kp = lib().crypto_box_seed_keypair(seed);
    return new X25519KeyPair(kp.privateKey, kp.publicKey, new Uint8Array(seed));
  }

  /** Never print the secret. */
  toString(): string {
    return `X25519KeyPair(public=${toHex(this.publicKey)})`;
  }
}

/**
 * Raw X25519 shared secret (accepts a non-canonical `u`, as RFC 7748).
 *
 * @throws KeyValidationError the result is all zeros (`public` has small order).
 */
export function x25519(secret: Uint8Array, publicKey: Uint8Array): Uint8Array {
  try {
    return lib().crypto_scalarmult(secret, publicKey);
  } catch {
    throw new KeyValidationError("X25519 with a small-order public key");
  }
}

/**
 * Anonymous public-key encryption in libsodium's `crypto_box_seal` format
 * (§4.6). Without `ephemeralSeed`, libsodium draws the ephemeral key pair
 * (`crypto_box_seal`); with it (TEST VECTORS ONLY: a reused seed reuses the
 * ephemeral key and nonce) the output is reproducible.
 *
 * @throws KeyValidationError an unusable recipient key; UsageError a bad seed.
 */
export function seal(recipientPublic: Uint8Array, message: Uint8Array, ephemeralSeed?: Uint8Array): Uint8Array {
  validateX25519Public(recipientPublic);
  const s = lib();
  if (ephemeralSeed === undefined) return s.crypto_box_seal(message, recipientPublic);
  if (ephemeralSeed.length !== 32) throw new UsageError("the ephemeral seed is 32 bytes");
  const eph = s.crypto_box_seed_keypair(ephemeralSeed);
  const nonce = s.crypto_generichash(24, concat(eph.publicKey, recipientPublic), null);
  return concat(eph.publicKey, s.crypto_box_easy(message, nonce, recipientPublic, eph.privateKey));
}

/**
 * Open a sealed box with libsodium's `crypto_box_seal_open`.
 *
 * @throws DecryptError not sealed for this key, tampered, or too short.
 */
export function sealOpen(recipient: X25519KeyPair, sealed: Uint8Array): Uint8Array {
  if (sealed.length < SEAL_OVERHEAD) throw new DecryptError("sealed box is too short");
  try {
    return lib().crypto_box_seal_open(sealed, recipient.publicKey, recipient.secret);
  } catch {
    throw new DecryptError("sealed box does not open with this key");
  }
}

// ----------------------------------------------------------------------- AEAD

/** XChaCha20-Poly1305 (IETF) encryption; returns ciphertext ‖ 16-byte tag. */
export function aeadEncrypt(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Uint8Array {
  if (key.length !== AEAD_KEY_SIZE || nonce.length !== AEAD_NONCE_SIZE) {
    throw new UsageError("XChaCha20-Poly1305 takes a 32-byte key and a 24-byte nonce");
  }
  return lib().crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, null, nonce, key);
}

/**
 * XChaCha20-Poly1305 (IETF) decryption.
 *
 * @throws DecryptError wrong key, nonce or associated data, or tampered data.
 */
export function aeadDecrypt(key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array): Uint8Array {
  if (key.length !== AEAD_KEY_SIZE || nonce.length !== AEAD_NONCE_SIZE) {
    throw new DecryptError("XChaCha20-Poly1305 takes a 32-byte key and a 24-byte nonce");
  }
  if (ciphertext.length < AEAD_TAG_SIZE) throw new DecryptError("ciphertext is shorter than its authentication tag");
  try {
    return lib().crypto_aead_xchacha20poly1305_ietf_decrypt(null, ciphertext, ad, nonce, key);
  } catch {
    throw new DecryptError("authenticated decryption failed (wrong key or tampered data)");
  }
}
