/**
 * Device and account identities (docs/protocol.md §5; mirrors
 * `sddsf.protocol.identity`). Key material comes in as seeds: this module reads
 * no randomness.
 */

import { bytesEqual, toHex, utf8 } from "./bytes.js";
import { Ed25519PublicKey, Ed25519SigningKey, hkdfSha256, validateX25519Public, X25519KeyPair } from "./crypto.js";
import { UsageError } from "./errors.js";
import * as labels from "./labels.js";
import { taggedHash } from "./labels.js";

/** Size of device ids, account ids and hashes. */
export const ID_SIZE = 32;
const HKDF_SALT = utf8("sddsf/v1/account-secret");
const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/** The 32-byte device id of a device signing public key. */
export function deviceIdOf(signingPublic: Uint8Array): Uint8Array {
  return taggedHash(labels.DEVICE_ID, signingPublic);
}

/** The 32-byte account id of an account signing public key. */
export function accountIdOf(accountSigningPublic: Uint8Array): Uint8Array {
  return taggedHash(labels.ACCOUNT_ID, accountSigningPublic);
}

/**
 * Human-comparable fingerprint: 160 bits as 8 groups of 4 Base32 characters
 * (RFC 4648, upper case), e.g. `DUPE-75YN-...`. Compare all groups.
 */
export function fingerprint(identifier: Uint8Array): string {
  let bits = 0;
  let acc = 0;
  let text = "";
  for (const b of identifier.subarray(0, 20)) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      text += BASE32[(acc >> bits) & 31];
    }
    acc &= (1 << bits) - 1;
  }
  return text.match(/.{1,4}/g)!.join("-");
}

/** A device's public identity (what the registry records). */
export class DevicePublic {
  private constructor(
    readonly deviceId: Uint8Array,
    readonly signingKey: Ed25519PublicKey,
    readonly kxKey: Uint8Array,
  ) {}

  /**
   * Validate both public keys and derive the device id.
   *
   * @throws KeyValidationError an unusable Ed25519 or X25519 key.
   */
  static fromKeys(signingPublic: Uint8Array, kxPublic: Uint8Array): DevicePublic {
    const sk = Ed25519PublicKey.fromBytes(signingPublic);
    return new DevicePublic(deviceIdOf(sk.raw), sk, validateX25519Public(kxPublic));
  }
}

/** A device's private keys. */
export class DeviceKeys {
  private constructor(
    readonly signing: Ed25519SigningKey,
    readonly kx: X25519KeyPair,
  ) {}

  /** Build device keys from two independent 32-byte random seeds. */
  static fromSeeds(signingSeed: Uint8Array, kxSeed: Uint8Array): DeviceKeys {
    if (bytesEqual(signingSeed, kxSeed)) {
      throw new UsageError("the signing and key-agreement seeds must be independent");
    }
    return new DeviceKeys(Ed25519SigningKey.fromSeed(signingSeed), X25519KeyPair.fromSeed(kxSeed));
  }

  /** The public identity (validated). */
  get publicIdentity(): DevicePublic {
    return DevicePublic.fromKeys(this.signing.publicKey.raw, this.kx.publicKey);
  }

  /** This device's id. */
  get deviceId(): Uint8Array {
    return deviceIdOf(this.signing.publicKey.raw);
  }

  /** Sign with the device signing key. */
  sign(message: Uint8Array): Uint8Array {
    return this.signing.sign(message);
  }

  /** Never print a secret. */
  toString(): string {
    return `DeviceKeys(id=${toHex(this.deviceId).slice(0, 16)}...)`;
  }
}

/** The account's public trust anchor, pinned by every device. */
export class AccountPublic {
  private constructor(
    readonly signingKey: Ed25519PublicKey,
    readonly recoveryKey: Uint8Array,
  ) {}

  /**
   * Validate both keys.
   *
   * @throws KeyValidationError an unusable public key.
   */
  static fromKeys(signingPublic: Uint8Array, recoveryPublic: Uint8Array): AccountPublic {
    return new AccountPublic(Ed25519PublicKey.fromBytes(signingPublic), validateX25519Public(recoveryPublic));
  }

  /** The 32-byte account id. */
  get accountId(): Uint8Array {
    return accountIdOf(this.signingKey.raw);
  }

  /** What people compare to be sure they talk about the same account. */
  get fingerprint(): string {
    return fingerprint(this.accountId);
  }
}

/** Keys derived from the 32-byte account secret (never synced, never sent). */
export class AccountKeys {
  private constructor(
    readonly signing: Ed25519SigningKey,
    readonly recovery: X25519KeyPair,
  ) {}

  /** Derive the account keys: HKDF-SHA256(secret, salt, info = label) → seeds. */
  static fromSecret(secret: Uint8Array): AccountKeys {
    if (secret.length !== 32) throw new UsageError("the account secret is 32 bytes");
    const signSeed = hkdfSha256(secret, HKDF_SALT, utf8(labels.ACCOUNT_SIGNING_KEY));
    const recSeed = hkdfSha256(secret, HKDF_SALT, utf8(labels.ACCOUNT_RECOVERY_KEY));
    return new AccountKeys(Ed25519SigningKey.fromSeed(signSeed), X25519KeyPair.fromSeed(recSeed));
  }

  /** The public half. */
  get publicKeys(): AccountPublic {
    return AccountPublic.fromKeys(this.signing.publicKey.raw, this.recovery.publicKey);
  }

  /** The 32-byte account id. */
  get accountId(): Uint8Array {
    return accountIdOf(this.signing.publicKey.raw);
  }

  /** Sign with the account signing key. */
  sign(message: Uint8Array): Uint8Array {
    return this.signing.sign(message);
  }

  /** Never print a secret. */
  toString(): string {
    return `AccountKeys(id=${toHex(this.accountId).slice(0, 16)}...)`;
  }
}
