/**
 * Versioned domain-separation labels and the two ways they are applied
 * (docs/protocol.md §3; mirrors `sddsf.protocol.labels`).
 *
 * Every signature message, non-Merkle hash and AEAD associated data is the
 * canonical encoding of `[label, part1, ...]` ({@link labelled},
 * {@link taggedHash}); array framing makes the split between parts unambiguous.
 */

import { encode, type Encodable } from "./cbor.js";
import { blake2b256 } from "./crypto.js";

export const OP_SIG = "sddsf/v1/op/sig";
export const OP_AD = "sddsf/v1/op/ad";
export const OP_ID = "sddsf/v1/op/id";
export const OP_CIPHERTEXT = "sddsf/v1/op/ciphertext";
export const OP_PARTS = "sddsf/v1/op/parts";
export const DOC_KEY = "sddsf/v1/doc-key";
export const DEVICE_ID = "sddsf/v1/device-id";
export const ACCOUNT_ID = "sddsf/v1/account-id";
export const ACCOUNT_SIGNING_KEY = "sddsf/v1/account/signing-key";
export const ACCOUNT_RECOVERY_KEY = "sddsf/v1/account/recovery-key";
export const REGISTRY_SIG = "sddsf/v1/registry/sig";
export const REGISTRY_COSIG = "sddsf/v1/registry/cosig";
export const REGISTRY_ENTRY = "sddsf/v1/registry/entry";
export const KEY_PACKAGE_SIG = "sddsf/v1/key-package/sig";
export const KEY_PACKAGE_HASH = "sddsf/v1/key-package/hash";
export const KEY_PACKAGE_SEALED = "sddsf/v1/key-package/sealed-key";
export const KEY_PACKAGE_COMMIT = "sddsf/v1/key-package/key-commit";
export const KEY_PACKAGE_WRAP = "sddsf/v1/key-package/previous-keys";
export const TREE_HEAD_SIG = "sddsf/v1/tree-head/sig";
export const AUTH_SESSION = "sddsf/v1/auth/session";
export const DOC_ID = "sddsf/v1/doc-id";
export const REQUEST_SIG = "sddsf/v1/request/sig";
export const SNAPSHOT_SIG = "sddsf/v1/snapshot/sig";
export const SNAPSHOT_AD = "sddsf/v1/snapshot/ad";
export const SNAPSHOT_KEY = "sddsf/v1/snapshot/key";
export const SNAPSHOT_ID = "sddsf/v1/snapshot/id";
export const SNAPSHOT_CHUNK_AD = "sddsf/v1/snapshot/chunk-ad";
export const SNAPSHOT_CHUNK_ID = "sddsf/v1/snapshot/chunk-id";
export const SNAPSHOT_CHUNK_NONCE = "sddsf/v1/snapshot/chunk-nonce";
export const SNAPSHOT_ATTEST_SIG = "sddsf/v1/snapshot/attestation";
export const BACKUP_KEY = "sddsf/v1/backup/key";
export const BACKUP_VERIFIER = "sddsf/v1/backup/verifier";
export const BACKUP_AD = "sddsf/v1/backup/ad";
export const PAIRING_KEY = "sddsf/v1/pairing/key";
export const PAIRING_SAS = "sddsf/v1/pairing/sas";
export const PAIRING_CONFIRM = "sddsf/v1/pairing/confirm";
export const PAIRING_CODE = "sddsf/v2/pairing/code";
export const PAIRING_COMMIT = "sddsf/v2/pairing/commit";
export const DEVICE_REPORT_SIG = "sddsf/v1/controller/device-report";
export const ENCRYPTION_POLICY_SIG = "sddsf/v1/controller/encryption-policy";
export const VAULT_RECORD_SIG = "sddsf/v1/vault/record";
export const KV_RECORD_SIG = "sddsf/v1/kv/record";
export const AUTH_CHALLENGE_MAC = "sddsf/v1/auth/challenge-mac";
export const REQUEST_KEY_SIG = "sddsf/v1/request/key-sig";
export const ALERT_ACK_SIG = "sddsf/v1/controller/alert-ack";
export const BOOTSTRAP_SIG = "sddsf/v1/bootstrap/sig";
export const MEMBERSHIP_SIG = "sddsf/v1/membership/sig";
export const MEMBERSHIP_ENTRY = "sddsf/v1/membership/entry";

/** Canonical bytes of `[label, ...parts]`: the input to a signature, KDF or AD. */
export function labelled(label: string, ...parts: Encodable[]): Uint8Array {
  return encode([label, ...parts]);
}

/** BLAKE2b-256 of {@link labelled}`(label, ...parts)`. */
export function taggedHash(label: string, ...parts: Encodable[]): Uint8Array {
  return blake2b256(labelled(label, ...parts));
}
