"""Deterministic builders shared by the protocol-core tests.

Everything here is derived from fixed seeds (``seed(i) == bytes([i]) * 32``), so
every test run signs and encrypts exactly the same bytes. Builders come in two
flavours: the honest path goes through the library's own recipes (``seal_op``,
``genesis``, ``add_device``, ``build_key_package``); the ``*_by_hand`` / ``raw_*``
builders assemble structures field by field so that tests can forge, omit or
misplace any part of them.

The standard world (cached, built once per process)::

    ACCOUNT            account(1)
    D1, D2, D3         device(1), device(2), device(3)
    STRANGER           device(9)   (never registered)
    base_registry()    genesis(D1) -> add(D2 by D1)                    active: D1, D2
    revoked_registry() base -> add(D3 by D1) -> revoke(D3 by D1)        active: D1, D2
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Final

from sddsf.crypto import aead_encrypt
from sddsf.protocol import labels
from sddsf.protocol.clock import HLCTimestamp
from sddsf.protocol.encoding import encode
from sddsf.protocol.envelope import (
    FORMAT_VERSION,
    GENESIS_PREV,
    OpHeader,
    TreeHeadRef,
    derive_doc_key,
    seal_op,
)
from sddsf.protocol.identity import AccountKeys, DeviceKeys
from sddsf.protocol.keypackage import KEY_PACKAGE_VERSION, key_commitment
from sddsf.protocol.labels import labelled, tagged_hash
from sddsf.protocol.registry import (
    EntryType,
    RegistryState,
    Signer,
    add_device,
    assemble_entry,
    build_body,
    countersign_body,
    genesis,
    revoke_device,
    sign_body,
    verify_registry,
)
from sddsf.protocol.vv import VersionVector
from sddsf.testing.seeded import seal_seeded

NOW_MS: Final = 1_700_000_000_000
SPACE: Final = bytes(range(16))
OTHER_SPACE: Final = bytes([0xAA]) * 16
DOC: Final = bytes([0x07]) * 16
OTHER_DOC: Final = bytes([0x08]) * 16
EPOCH_KEY: Final = bytes([0x42]) * 32
OTHER_EPOCH_KEY: Final = bytes([0x43]) * 32
ZERO32: Final = bytes(32)


def seed(i: int) -> bytes:
    """A deterministic 32-byte seed."""
    return bytes([i]) * 32


@cache
def account(i: int = 1) -> AccountKeys:
    """Account keys derived from the secret ``seed(i)``."""
    return AccountKeys.from_secret(seed(i))


@cache
def device(i: int) -> DeviceKeys:
    """Device keys for device number ``i`` (1..99); signing and kx seeds differ."""
    return DeviceKeys.from_seeds(seed(0x10 + i), seed(0x80 + i))


ACCOUNT: Final = account(1)
OTHER_ACCOUNT: Final = account(2)
D1: Final = device(1)
D2: Final = device(2)
D3: Final = device(3)
D4: Final = device(4)
STRANGER: Final = device(9)


# ---------------------------------------------------------------- registries


@dataclass(frozen=True)
class Registry:
    """Entries of a registry and the state they verify to."""

    entries: tuple[bytes, ...]
    state: RegistryState

    def then(self, entry: bytes) -> Registry:
        """This registry extended by one entry (applied with ``state.apply``)."""
        return Registry((*self.entries, entry), self.state.apply(entry))


@cache
def genesis_registry() -> Registry:
    """genesis(ACCOUNT, D1)."""
    first = genesis(ACCOUNT, D1, "laptop", NOW_MS)
    return Registry((first,), verify_registry([first], pinned=ACCOUNT.public))


@cache
def base_registry() -> Registry:
    """genesis(D1) -> add(D2 by D1). Active: D1, D2."""
    g = genesis_registry()
    return g.then(add_device(g.state, D1, D2, "phone", NOW_MS + 1))


@cache
def revoked_registry() -> Registry:
    """base -> add(D3 by D1) -> revoke(D3 by D1). Active: D1, D2; D3 revoked."""
    r = base_registry()
    r = r.then(add_device(r.state, D1, D3, "tablet", NOW_MS + 2))
    return r.then(revoke_device(r.state, D1, D3.device_id, "lost", NOW_MS + 3))


def entry_by_hand(state: RegistryState, etype: EntryType | str, *, signer: Signer,
                  signer_id: bytes, fields: Mapping[str, object],
                  cosigner: Signer | None = None, seq: int | None = None,
                  prev: bytes | None = None, account_id: bytes | None = None,
                  ts_ms: int = NOW_MS + 10) -> bytes:
    """A registry entry assembled field by field (any type, signer, seq or prev).

    ``etype`` may be a plain string to build entry types the library does not know.
    """
    body_map: dict[str, object] = {
        "v": 1,
        "account": state.account_id if account_id is None else account_id,
        "seq": state.seq + 1 if seq is None else seq,
        "prev": state.head if prev is None else prev,
        "type": etype.value if isinstance(etype, EntryType) else etype,
        "ts": ts_ms,
        "signer": signer_id,
        **fields,
    }
    body = encode(body_map)
    cosig = countersign_body(body, cosigner) if cosigner is not None else None
    return assemble_entry(body, sign_body(body, signer), cosig)


def build_entry(state: RegistryState, etype: EntryType, *, signer: Signer, signer_id: bytes,
                fields: Mapping[str, object], cosigner: Signer | None = None) -> bytes:
    """A well-formed next entry via the library's ``build_body``, with any signer."""
    body = build_body(etype, account_id=state.account_id, seq=state.seq + 1, prev=state.head,
                      ts_ms=NOW_MS + 10, signer_id=signer_id, fields=fields)
    cosig = countersign_body(body, cosigner) if cosigner is not None else None
    return assemble_entry(body, sign_body(body, signer), cosig)


# ------------------------------------------------------------------------ ops


def nonce_for(author: bytes, seq: int, plaintext: bytes) -> bytes:
    """A deterministic 24-byte nonce, distinct per (author, seq, plaintext)."""
    return hashlib.blake2b(author + seq.to_bytes(8, "big") + plaintext, digest_size=24).digest()


def make_header(author: DeviceKeys | bytes, *, seq: int = 1, prev: bytes = GENESIS_PREV,
                deps: Mapping[bytes, int] | None = None, epoch: int = 0,
                ts_ms: int = NOW_MS, counter: int = 0, space: bytes = SPACE,
                doc: bytes = DOC, seen: TreeHeadRef | None = None,
                nonce: bytes | None = None, plaintext: bytes = b"update",
                reg: int = 0) -> OpHeader:
    """An op header with the given fields (defaults: first op of ``author`` in SPACE/DOC,
    written by an author that had verified the registry up to genesis)."""
    author_id = author.device_id if isinstance(author, DeviceKeys) else author
    return OpHeader(space=space, doc=doc, author=author_id, seq=seq, prev=prev,
                    deps=VersionVector(deps or {}), epoch=epoch,
                    ts=HLCTimestamp(ts_ms, counter), seen=seen,
                    nonce=nonce if nonce is not None else nonce_for(author_id, seq, plaintext),
                    reg=reg)


def envelope_by_hand(header_bytes: bytes, plaintext: bytes, *, signer: Signer, nonce: bytes,
                     space: bytes, doc: bytes, epoch: int, epoch_key: bytes = EPOCH_KEY,
                     version: int = FORMAT_VERSION) -> bytes:
    """Encrypt and sign exactly as the protocol does, but with any header bytes and signer."""
    key = derive_doc_key(epoch_key, space, doc, epoch)
    ciphertext = aead_encrypt(key, nonce, plaintext, labelled(labels.OP_AD, header_bytes))
    message = labelled(labels.OP_SIG, header_bytes,
                       tagged_hash(labels.OP_CIPHERTEXT, ciphertext))
    return encode([version, header_bytes, ciphertext, signer.sign(message)])


def make_op(author: DeviceKeys, *, plaintext: bytes = b"update", epoch_key: bytes = EPOCH_KEY,
            signer: Signer | None = None, **header_fields: object) -> bytes:
    """Envelope bytes of an op by ``author`` with the given header fields.

    With ``signer`` the op claims ``author`` but is signed by ``signer`` (a forgery);
    otherwise it is built by the library's own ``seal_op``.
    """
    header = make_header(author, plaintext=plaintext, **header_fields)  # type: ignore[arg-type]
    if signer is None:
        return seal_op(author, header, plaintext, epoch_key).raw
    return envelope_by_hand(encode(header.to_wire()), plaintext, signer=signer,
                            nonce=header.nonce, space=header.space, doc=header.doc,
                            epoch=header.epoch, epoch_key=epoch_key)


def raw_envelope(header: Mapping[str, object] | bytes, *, ciphertext: bytes = bytes(16),
                 signature: bytes = bytes(64), version: object = FORMAT_VERSION) -> bytes:
    """Envelope bytes from a header map (or header bytes) and dummy ciphertext/signature."""
    header_bytes = header if isinstance(header, bytes) else encode(dict(header))
    return encode([version, header_bytes, ciphertext, signature])


# ---------------------------------------------------------------- key packages


def raw_key_package(creator: DeviceKeys, *, recipients: Mapping[bytes, bytes], space: bytes = SPACE,
                    epoch: int = 0, prev: bytes = ZERO32, registry_seq: int,
                    epoch_key: bytes = EPOCH_KEY, ts_ms: int = NOW_MS,
                    sealed_override: Mapping[bytes, bytes] | None = None) -> bytes:
    """A key package assembled by hand and signed by ``creator``.

    Args:
        recipients: recipient id -> X25519 public key to seal the key to.
        sealed_override: recipient id -> sealed bytes to put instead of a fresh seal.
    """
    plaintext = labelled(labels.KEY_PACKAGE_SEALED, space, epoch, epoch_key)
    overrides = dict(sealed_override or {})
    rows = []
    for i, rid in enumerate(sorted(recipients)):
        sealed = overrides.get(rid) or seal_seeded(recipients[rid], plaintext, seed(200 + i))
        rows.append([rid, sealed])
    body = encode({"v": KEY_PACKAGE_VERSION, "space": space, "epoch": epoch, "prev": prev,
                   "creator": creator.device_id, "ts": ts_ms, "registry_seq": registry_seq,
                   "recipients": rows,
                   "key_commit": key_commitment(space, epoch, epoch_key), "prev_keys": None})
    return encode([KEY_PACKAGE_VERSION, body,
                   creator.sign(labelled(labels.KEY_PACKAGE_SIG, body))])


def recipients_of(state: RegistryState, *extra: DeviceKeys) -> dict[bytes, bytes]:
    """Recipient map of every active device plus the recovery key (and ``extra`` devices)."""
    out = {r.device_id: r.public.kx_key for r in state.active_devices()}
    out[state.account_id] = state.account.recovery_key
    for d in extra:
        out[d.device_id] = d.kx.public
    return out


def ephemeral_seeds(state: RegistryState, start: int = 200) -> list[bytes]:
    """One deterministic ephemeral seed per recipient of a package built on ``state``."""
    return [seed(start + i) for i in range(len(state.active_devices()) + 1)]
