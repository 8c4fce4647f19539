"""Backups of a relay database: ``sddsf relay backup`` and ``sddsf relay restore``.

This is the operator's backup of the whole relay database (every space's op
log, registries, key packages, snapshots, acknowledgements, the passphrase
backups users stored, the controller's tables), not the per-account
passphrase backup of ``sddsf backup`` (``sddsf.keys.backup``), whose blobs are
one of the tables copied here.

* :func:`create_backup`: one consistent snapshot of a running relay, written
  incrementally (only op-log and audit-log rows after the previous backup of
  the chain; unchanged pieces of other tables are referred to, not copied),
  with the relay's signed tree heads at the snapshot, optionally encrypted to
  an operator X25519 key (:mod:`.format`).
* :func:`restore_backup`: a new database from a backup, refused unless every
  piece, root and signed head checks out; or the same checks without a target.
* :mod:`.store`: a directory, or an S3-compatible bucket (boto3).

What a backup holds, and what it never holds, is in ``docs/operations.md``
section 5.6: the relay stores ciphertext only, so a backup holds no plaintext
of user data, but it does hold metadata (device names and public keys in the
registries, sizes, timestamps), which is why encrypting it is recommended.
"""

from __future__ import annotations

import os
from pathlib import Path

from sddsf.crypto import Ed25519SigningKey
from sddsf.errors import ConfigError
from sddsf.relay.backup.create import BackupReport, create_backup, latest_complete
from sddsf.relay.backup.format import (
    generate_operator_key,
    load_operator_key,
    parse_recipient,
)
from sddsf.relay.backup.restore import RestoreReport, read_manifest, restore_backup
from sddsf.relay.backup.store import BackupStore, DirectoryStore, S3Store, open_store

__all__ = [
    "BackupReport",
    "BackupStore",
    "DirectoryStore",
    "RestoreReport",
    "S3Store",
    "create_backup",
    "existing_relay_key",
    "generate_operator_key",
    "latest_complete",
    "load_operator_key",
    "open_store",
    "parse_recipient",
    "read_manifest",
    "restore_backup",
]


def existing_relay_key(key_file: str) -> Ed25519SigningKey | None:
    """The relay key as ``sddsf relay serve`` would load it, without creating one:
    ``SDDSF_RELAY_KEY_HEX`` if set, else the key file; None if the file does not
    exist (a relay started there would create a new key).

    Raises:
        ConfigError: a malformed key or an unreadable file.
    """
    from sddsf.relay.serve import load_relay_key  # noqa: PLC0415

    if os.environ.get("SDDSF_RELAY_KEY_HEX") or Path(key_file).is_file():
        return load_relay_key(key_file)
    if Path(key_file).exists():
        raise ConfigError(f"the relay key {key_file} is not a file")
    return None
