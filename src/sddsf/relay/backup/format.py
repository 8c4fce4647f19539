"""The relay backup format: manifests, pieces, their encryption, operator keys.

A backup is a folder ``backup-NNNNNN`` of a location holding numbered pieces
(``pNNNNNN``) and, written last, its ``manifest``::

    manifest = [1, body_bytes, signature]        signed by the relay key:
                                                 labelled(RELAY_BACKUP_SIG, body_bytes)
    body     = {"v": 1, "number", "id", "created_ms", "relay", "schema", "source",
                "parent": null | [number, BLAKE2b-256(parent manifest)],
                "recipient": null | X25519 public key of the operator,
                "pieces": [[kind, folder, name, hash, size, seal], ...]}

Each piece entry names the folder that holds it (an incremental backup refers
to unchanged pieces of earlier backups of its chain), its BLAKE2b-256 and size
as stored, and how it is sealed:

* ``"none"``: the piece is its plaintext (no operator key was configured);
* ``"operator"``: ``[1, sealed_key, nonce, ciphertext]`` where ``sealed_key``
  is a fresh 32-byte piece key in a libsodium sealed box to the operator's
  X25519 key and the ciphertext is XChaCha20-Poly1305 under it, with associated
  data ``labelled(RELAY_BACKUP_AD, relay_id, folder, name, kind)``;
* ``"relay"``: the same AEAD under a key derived from the relay key's seed
  (HKDF, label ``RELAY_BACKUP_STATE``): only the backup's own bookkeeping
  (``state``), which the next incremental backup must read on a host that has
  the relay key but not the operator's private key.

A piece's plaintext is one canonical CBOR map ``{"v": 1, "kind", "columns", "rows"}``
(a table's rows) or the ``heads``/``state`` maps described in
:mod:`sddsf.relay.backup.create`. The manifest signature covers every piece's
hash, so a restore detects any change to any byte of a backup; the piece AEAD
(when sealed) adds confidentiality and binds each piece to its place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sddsf.crypto import (
    AEAD_NONCE_SIZE,
    Ed25519PublicKey,
    Ed25519SigningKey,
    X25519KeyPair,
    aead_decrypt,
    aead_encrypt,
    blake2b_256,
    hkdf_sha256,
    random_bytes,
    seal,
    seal_open,
    validate_x25519_public,
)
from sddsf.errors import Code, ConfigError, DecodeError, SddsfError, SignatureError, UsageError
from sddsf.protocol import labels
from sddsf.protocol.encoding import DecodeLimits, decode, encode
from sddsf.protocol.labels import labelled
from sddsf.protocol.schema import Fields, decode_signed, expect_list, expect_map

__all__ = [
    "FORMAT_VERSION",
    "PIECE_LIMITS",
    "Manifest",
    "PieceRef",
    "decode_manifest",
    "folder_name",
    "generate_operator_key",
    "load_operator_key",
    "open_piece",
    "parse_recipient",
    "piece_from_wire",
    "seal_piece",
    "sign_manifest",
]

FORMAT_VERSION: Final = 1
SEALS: Final = ("none", "operator", "relay")
#: Bounds for decoding a stored piece (pieces are cut at a few MiB; one row may
#: be a large snapshot blob).
PIECE_LIMITS: Final = DecodeLimits(max_size=1 << 30, max_depth=8, max_items=1 << 20)
_MANIFEST_LIMITS: Final = DecodeLimits(max_size=1 << 28, max_depth=8, max_items=1 << 22)
_MANIFEST_FIELDS: Final = ("v", "number", "id", "created_ms", "relay", "schema", "source",
                           "parent", "recipient", "pieces")


def folder_name(number: int) -> str:
    """The folder of backup ``number`` (``backup-000001``)."""
    return f"backup-{number:06d}"


@dataclass(frozen=True, slots=True)
class PieceRef:
    """One piece as the manifest lists it."""

    kind: str  # a table name, "pruned", "heads" or "state"
    folder: int  # the backup number whose folder holds it
    name: str
    hash: bytes  # BLAKE2b-256 of the stored bytes
    size: int
    seal: str  # "none", "operator" or "relay"

    @property
    def key(self) -> str:
        """The object name in the location."""
        return f"{folder_name(self.folder)}/{self.name}"

    def to_wire(self) -> list[object]:
        """The manifest's array form."""
        return [self.kind, self.folder, self.name, self.hash, self.size, self.seal]


@dataclass(frozen=True, slots=True)
class Manifest:
    """A decoded manifest (its signature is checked by :meth:`verify`)."""

    number: int
    backup_id: bytes
    created_ms: int
    relay_id: bytes
    schema: int
    source: str
    parent: tuple[int, bytes] | None
    recipient: bytes | None
    pieces: tuple[PieceRef, ...]
    body_bytes: bytes
    signature: bytes
    raw: bytes

    @property
    def digest(self) -> bytes:
        """BLAKE2b-256 of the stored manifest (what a child backup names as its parent)."""
        return blake2b_256(self.raw)

    def verify(self, relay_key: Ed25519PublicKey) -> None:
        """Check the relay's signature.

        Raises:
            SignatureError: not signed by ``relay_key``.
        """
        if not relay_key.is_valid_signature(labelled(labels.RELAY_BACKUP_SIG, self.body_bytes),
                                            self.signature):
            raise SignatureError(f"the manifest of backup {self.number} is not signed by the "
                                 f"relay key {relay_key.raw.hex()}: it was altered, or "
                                 "belongs to another relay")


def sign_manifest(key: Ed25519SigningKey, *, number: int, backup_id: bytes, created_ms: int,
                  schema: int, source: str, parent: tuple[int, bytes] | None,
                  recipient: bytes | None, pieces: list[PieceRef]) -> bytes:
    """Encode and sign a manifest with the relay key."""
    body = encode({"v": FORMAT_VERSION, "number": number, "id": backup_id,
                   "created_ms": created_ms, "relay": key.public.raw, "schema": schema,
                   "source": source, "parent": None if parent is None else list(parent),
                   "recipient": recipient, "pieces": [p.to_wire() for p in pieces]})
    return encode([FORMAT_VERSION, body, key.sign(labelled(labels.RELAY_BACKUP_SIG, body))])


def decode_manifest(data: bytes) -> Manifest:
    """Decode a stored manifest's structure (not its signature).

    Raises:
        DecodeError: malformed, or a format version this build does not read.
    """
    f, body, sig = decode_signed(data, what="backup manifest", version=FORMAT_VERSION,
                                 fields=_MANIFEST_FIELDS, limits=_MANIFEST_LIMITS)
    parent_raw = f.raw("parent")
    parent = None
    if parent_raw is not None:
        pf = expect_list(parent_raw, "backup manifest.parent", max_items=2)
        if len(pf) != 2 or not isinstance(pf[0], int) or not isinstance(pf[1], bytes):
            raise DecodeError("backup manifest.parent: expected [number, hash]", Code.MALFORMED)
        parent = (pf[0], pf[1])
    recipient = f.raw("recipient")
    if recipient is not None and (not isinstance(recipient, bytes) or len(recipient) != 32):
        raise DecodeError("backup manifest.recipient: expected 32 bytes", Code.MALFORMED)
    pieces = tuple(piece_from_wire(p) for p in f.list_("pieces", max_items=1 << 22))
    return Manifest(f.int_("number", lo=1), f.bytes_("id", size=16), f.int_("created_ms"),
                    f.bytes_("relay", size=32), f.int_("schema"), f.str_("source"), parent,
                    recipient, pieces, body, sig, bytes(data))


def piece_from_wire(raw: object) -> PieceRef:
    """A piece entry of a manifest (or of a backup's state).

    Raises:
        DecodeError: malformed.
    """
    items = expect_list(raw, "backup manifest piece", max_items=6)
    if len(items) != 6:
        raise DecodeError("backup manifest piece: expected 6 fields", Code.MALFORMED)
    f = Fields(dict(zip(("kind", "folder", "name", "hash", "size", "seal"), items,
                        strict=True)), "backup manifest piece")
    seal_kind = f.str_("seal")
    if seal_kind not in SEALS:
        raise DecodeError(f"backup manifest piece: unknown seal {seal_kind!r}", Code.MALFORMED)
    name = f.str_("name", max_len=32)
    if not name.startswith("p") or not name[1:].isdigit():
        raise DecodeError(f"backup manifest piece: bad name {name!r}", Code.MALFORMED)
    return PieceRef(f.str_("kind", max_len=64), f.int_("folder", lo=1), name,
                    f.bytes_("hash", size=32), f.int_("size"), seal_kind)


# ---------------------------------------------------------------- piece sealing


def piece_ad(relay_id: bytes, ref_folder: int, name: str, kind: str) -> bytes:
    """The associated data that binds a sealed piece to its place."""
    return labelled(labels.RELAY_BACKUP_AD, relay_id, ref_folder, name, kind)


def state_key(relay_key: Ed25519SigningKey) -> bytes:
    """The key of the backup's bookkeeping piece, derived from the relay key's seed."""
    return hkdf_sha256(relay_key.seed, salt=labels.RELAY_BACKUP_STATE.encode(),
                       info=labelled(labels.RELAY_BACKUP_STATE, relay_key.public.raw))


def seal_piece(plaintext: bytes, *, seal_kind: str, ad: bytes, recipient: bytes | None = None,
               relay_key: Ed25519SigningKey | None = None) -> bytes:
    """The stored bytes of a piece (see the module docstring)."""
    if seal_kind == "none":
        return plaintext
    nonce = random_bytes(AEAD_NONCE_SIZE)
    if seal_kind == "relay":
        if relay_key is None:
            raise UsageError("a relay-sealed piece needs the relay key")
        return encode([1, b"", nonce, aead_encrypt(state_key(relay_key), nonce, plaintext, ad)])
    if recipient is None:
        raise UsageError("an operator-sealed piece needs the operator's public key")
    piece_key = random_bytes(32)
    sealed = seal(recipient, piece_key)
    return encode([1, sealed, nonce, aead_encrypt(piece_key, nonce, plaintext, ad)])


def open_piece(stored: bytes, *, seal_kind: str, ad: bytes,
               operator: X25519KeyPair | None = None,
               relay_key: Ed25519SigningKey | None = None) -> bytes:
    """The plaintext of a stored piece.

    Raises:
        ConfigError: a sealed piece and no key to open it.
        DecodeError: malformed.
        DecryptError: the key does not open it (another key, or tampered).
    """
    if seal_kind == "none":
        return stored
    outer = decode(stored, limits=PIECE_LIMITS)
    if (not isinstance(outer, list) or len(outer) != 4 or outer[0] != 1
            or not all(isinstance(x, bytes) for x in outer[1:])):
        raise DecodeError("a sealed backup piece is not [1, sealed_key, nonce, ciphertext]",
                          Code.MALFORMED)
    _, sealed, nonce, ct = outer
    if seal_kind == "relay":
        if relay_key is None:
            raise ConfigError("this piece is sealed with the relay key, which is not loaded")
        return aead_decrypt(state_key(relay_key), nonce, ct, ad)
    if operator is None:
        raise ConfigError("this backup is encrypted: pass --decrypt-key FILE (the operator's "
                          "X25519 key written by 'sddsf relay backup-keygen')")
    return aead_decrypt(seal_open(operator, sealed), nonce, ct, ad)


def decode_piece(plaintext: bytes, kind: str) -> Fields:
    """The map of a piece's plaintext, checked to be of ``kind``.

    Raises:
        DecodeError: malformed, another version, or another kind.
    """
    value = decode(plaintext, limits=PIECE_LIMITS)
    if isinstance(value, dict) and value.get("v") != FORMAT_VERSION:
        raise DecodeError(f"backup piece of version {value.get('v')!r}; this build reads "
                          f"version {FORMAT_VERSION}", Code.UNSUPPORTED_VERSION)
    f = expect_map(value, f"backup piece ({kind})", ("v", "kind", "body"))
    if f.str_("kind", max_len=64) != kind:
        raise DecodeError(f"a backup piece listed as {kind!r} holds {f.raw('kind')!r}",
                          Code.MALFORMED)
    return expect_map(f.raw("body"), f"backup piece ({kind}).body",
                      _BODY_FIELDS.get(kind, ("columns", "rows")))


_BODY_FIELDS: Final = {"heads": ("heads",), "state": ("logs", "audit", "pieces")}


def encode_piece(kind: str, body: dict[str, object]) -> bytes:
    """The plaintext of a piece."""
    return encode({"v": FORMAT_VERSION, "kind": kind, "body": body})


# --------------------------------------------------------------- operator keys


def generate_operator_key(path: str | os.PathLike[str]) -> bytes:
    """Create an operator key file (a new X25519 seed, hex, mode 0600) and its
    public key next to it (``PATH.pub``). Returns the public key.

    Raises:
        ConfigError: the file exists (it is never overwritten) or cannot be written.
    """
    p = Path(path)
    pair = X25519KeyPair.from_seed(random_bytes(32))
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{p} exists; a key file is never overwritten") from None
    except OSError as exc:
        raise ConfigError(f"cannot create {p}: {exc}") from exc
    with os.fdopen(fd, "w") as f:
        f.write(pair.seed.hex() + "\n")
    Path(f"{p}.pub").write_text(pair.public.hex() + "\n")
    return pair.public


def load_operator_key(path: str | os.PathLike[str]) -> X25519KeyPair:
    """Read an operator key file.

    Raises:
        ConfigError: missing or malformed.
    """
    try:
        seed = bytes.fromhex(Path(path).read_text().strip())
        return X25519KeyPair.from_seed(seed)
    except (OSError, ValueError, SddsfError) as exc:
        raise ConfigError(f"cannot read the backup key {path}: {exc}") from None


def parse_recipient(value: str) -> bytes:
    """An operator public key: 64 hex characters, or a file holding them (``KEY.pub``).

    Raises:
        ConfigError: neither, or not a valid X25519 public key.
    """
    text = value.strip()
    if not _is_hex32(text):
        try:
            text = Path(value).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--encrypt-to {value!r} is neither 64 hex characters nor a "
                              f"readable public key file: {exc}") from None
    if not _is_hex32(text):
        raise ConfigError(f"--encrypt-to {value!r}: a public key is 64 hex characters")
    try:
        return validate_x25519_public(bytes.fromhex(text))
    except SddsfError as exc:
        raise ConfigError(f"--encrypt-to: {exc.message}") from None


def _is_hex32(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)
