"""Versioned domain-separation labels, and the two ways they are applied.

Every signature input, every non-Merkle hash and every AEAD associated-data
input in SDDSF is the canonical encoding of the array ``[label, part1, ...]``
(:func:`labelled`, :func:`tagged_hash`). HKDF derivations use the label
string itself as ``info`` (account keys) or as ``salt`` (doc keys, whose
``info`` is labelled). Merkle hashes follow RFC 9162 exactly (prefix bytes, no
label): their leaves are envelope bytes, which are themselves labelled. The label names the
structure and the protocol version, so bytes signed or hashed for one purpose
can never be accepted for another (THREATS #3; MLS ``SignWithLabel``). Parts
are byte strings or other canonical values; array framing makes the split
between parts unambiguous.
"""

from __future__ import annotations

import functools
from typing import Final

from sddsf.crypto import blake2b_256
from sddsf.protocol.encoding import UINT64_MAX, byte_string_head, encode, unsigned_int

__all__ = [
    "ACCOUNT_ID",
    "ACCOUNT_RECOVERY_KEY",
    "ACCOUNT_SIGNING_KEY",
    "ALERT_ACK_SIG",
    "AUTH_CHALLENGE_MAC",
    "AUTH_SESSION",
    "BACKUP_AD",
    "BACKUP_KEY",
    "BACKUP_VERIFIER",
    "BOOTSTRAP_SIG",
    "DEVICE_ID",
    "DEVICE_REPORT_SIG",
    "DOC_ID",
    "DOC_KEY",
    "ENCRYPTION_POLICY_SIG",
    "KEY_PACKAGE_COMMIT",
    "KEY_PACKAGE_HASH",
    "KEY_PACKAGE_SEALED",
    "KEY_PACKAGE_SIG",
    "KEY_PACKAGE_WRAP",
    "KV_RECORD_SIG",
    "MEMBERSHIP_ENTRY",
    "MEMBERSHIP_SIG",
    "OP_AD",
    "OP_CIPHERTEXT",
    "OP_ID",
    "OP_PARTS",
    "OP_SIG",
    "P2P_TOPIC",
    "PAIRING_CODE",
    "PAIRING_COMMIT",
    "PAIRING_CONFIRM",
    "PAIRING_KEY",
    "PAIRING_SAS",
    "PRESENCE_AD",
    "PRESENCE_KEY",
    "PRESENCE_SIG",
    "REGISTRY_COSIG",
    "REGISTRY_ENTRY",
    "REGISTRY_SIG",
    "RELAY_BACKUP_AD",
    "RELAY_BACKUP_SIG",
    "RELAY_BACKUP_STATE",
    "REQUEST_KEY_SIG",
    "REQUEST_SIG",
    "SNAPSHOT_AD",
    "SNAPSHOT_ATTEST_SIG",
    "SNAPSHOT_CHUNK_AD",
    "SNAPSHOT_CHUNK_ID",
    "SNAPSHOT_CHUNK_NONCE",
    "SNAPSHOT_ID",
    "SNAPSHOT_KEY",
    "SNAPSHOT_SIG",
    "TREE_HEAD_SIG",
    "VAULT_RECORD_SIG",
    "labelled",
    "tagged_hash",
]

OP_SIG: Final = "sddsf/v1/op/sig"
OP_AD: Final = "sddsf/v1/op/ad"
OP_ID: Final = "sddsf/v1/op/id"
OP_CIPHERTEXT: Final = "sddsf/v1/op/ciphertext"
OP_PARTS: Final = "sddsf/v1/op/parts"
DOC_KEY: Final = "sddsf/v1/doc-key"
DEVICE_ID: Final = "sddsf/v1/device-id"
ACCOUNT_ID: Final = "sddsf/v1/account-id"
ACCOUNT_SIGNING_KEY: Final = "sddsf/v1/account/signing-key"
ACCOUNT_RECOVERY_KEY: Final = "sddsf/v1/account/recovery-key"
REGISTRY_SIG: Final = "sddsf/v1/registry/sig"
REGISTRY_COSIG: Final = "sddsf/v1/registry/cosig"
REGISTRY_ENTRY: Final = "sddsf/v1/registry/entry"
KEY_PACKAGE_SIG: Final = "sddsf/v1/key-package/sig"
KEY_PACKAGE_HASH: Final = "sddsf/v1/key-package/hash"
KEY_PACKAGE_SEALED: Final = "sddsf/v1/key-package/sealed-key"
KEY_PACKAGE_COMMIT: Final = "sddsf/v1/key-package/key-commit"
KEY_PACKAGE_WRAP: Final = "sddsf/v1/key-package/previous-keys"
TREE_HEAD_SIG: Final = "sddsf/v1/tree-head/sig"
AUTH_SESSION: Final = "sddsf/v1/auth/session"
DOC_ID: Final = "sddsf/v1/doc-id"
REQUEST_SIG: Final = "sddsf/v1/request/sig"
SNAPSHOT_SIG: Final = "sddsf/v1/snapshot/sig"
SNAPSHOT_AD: Final = "sddsf/v1/snapshot/ad"
SNAPSHOT_KEY: Final = "sddsf/v1/snapshot/key"
SNAPSHOT_ID: Final = "sddsf/v1/snapshot/id"
SNAPSHOT_CHUNK_AD: Final = "sddsf/v1/snapshot/chunk-ad"
SNAPSHOT_CHUNK_ID: Final = "sddsf/v1/snapshot/chunk-id"
SNAPSHOT_CHUNK_NONCE: Final = "sddsf/v1/snapshot/chunk-nonce"
SNAPSHOT_ATTEST_SIG: Final = "sddsf/v1/snapshot/attestation"
BACKUP_KEY: Final = "sddsf/v1/backup/key"
BACKUP_VERIFIER: Final = "sddsf/v1/backup/verifier"
BACKUP_AD: Final = "sddsf/v1/backup/ad"
PAIRING_KEY: Final = "sddsf/v1/pairing/key"
PAIRING_SAS: Final = "sddsf/v1/pairing/sas"
PAIRING_CONFIRM: Final = "sddsf/v1/pairing/confirm"
PAIRING_CODE: Final = "sddsf/v2/pairing/code"
PAIRING_COMMIT: Final = "sddsf/v2/pairing/commit"
DEVICE_REPORT_SIG: Final = "sddsf/v1/controller/device-report"
ENCRYPTION_POLICY_SIG: Final = "sddsf/v1/controller/encryption-policy"
VAULT_RECORD_SIG: Final = "sddsf/v1/vault/record"
KV_RECORD_SIG: Final = "sddsf/v1/kv/record"
AUTH_CHALLENGE_MAC: Final = "sddsf/v1/auth/challenge-mac"
REQUEST_KEY_SIG: Final = "sddsf/v1/request/key-sig"
ALERT_ACK_SIG: Final = "sddsf/v1/controller/alert-ack"
RELAY_BACKUP_SIG: Final = "sddsf/v1/relay-backup/manifest"
RELAY_BACKUP_AD: Final = "sddsf/v1/relay-backup/ad"
RELAY_BACKUP_STATE: Final = "sddsf/v1/relay-backup/state-key"
BOOTSTRAP_SIG: Final = "sddsf/v1/bootstrap/sig"
MEMBERSHIP_SIG: Final = "sddsf/v1/membership/sig"
MEMBERSHIP_ENTRY: Final = "sddsf/v1/membership/entry"
P2P_TOPIC: Final = "sddsf/v1/p2p/topic"
PRESENCE_KEY: Final = "sddsf/v1/presence/key"
PRESENCE_AD: Final = "sddsf/v1/presence/ad"
PRESENCE_SIG: Final = "sddsf/v1/presence/sig"


@functools.cache
def _prefix(label: str, count: int) -> bytes:
    # Canonical array head for ``count`` items followed by the encoded label.
    return encode([label, *([b""] * (count - 1))])[: -(count - 1)] if count > 1 else encode(
        [label])


def labelled(label: str, *parts: object) -> bytes:
    """Canonical bytes of ``[label, *parts]``: the input to a signature, KDF or AD."""
    # Hot path (every op signature, id and AD; a snapshot's chunk nonce, chunk
    # AD and key): byte strings and integers in 0 .. 2^64-1 are encoded here,
    # after the cached prefix; any other part sends the whole array through
    # encode. A property test checks the result equals encode([label, *parts]).
    out = [_prefix(label, len(parts) + 1)]
    for p in parts:
        # Exact types: a bool, or a subclass of bytes or int, takes encode's path.
        if type(p) is bytes:
            out.append(byte_string_head(len(p)))
            out.append(p)
        elif type(p) is int and 0 <= p <= UINT64_MAX:
            out.append(unsigned_int(p))
        else:
            return encode([label, *parts])
    return b"".join(out)


def tagged_hash(label: str, *parts: object) -> bytes:
    """BLAKE2b-256 of :func:`labelled` ``(label, *parts)``."""
    return blake2b_256(labelled(label, *parts))
