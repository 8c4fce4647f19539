"""Adversarial properties of the protocol core (THREATS #1, #3, #16, #17).

* #1/#16 any single-byte mutation (any position, any xor 1..255) of a valid
  envelope makes verify_op raise an SddsfError: never ACCEPT or DUPLICATE, never
  another exception type. The same holds for a valid registry entry applied to
  its state, and for a valid key package, tree head and space snapshot. Every
  position is also swept exhaustively with xor 0x01, 0x80 and 0xFF; a mutated
  envelope that still decodes does not open, unless only its signature was hit
  (which then fails).
* #3 an op transplanted to another space, doc, author, seq or epoch (header
  rebuilt with one field changed, original ciphertext and signature kept) is
  rejected by verify_op with sig_invalid, in a context where every other rule
  passes, and does not open with the epoch key.
* verify_batch (the relay's parallel path) gives the same result as verify_op
  applied op by op, including the compromised-epoch rule.
* #17 arbitrary bytes, and structurally plausible junk, fed to decode_envelope,
  decode_entry, decode_key_package, decode_tree_head and decode_snapshot raise
  only DecodeError.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import (
    D1,
    D2,
    D3,
    D4,
    EPOCH_KEY,
    NOW_MS,
    SPACE,
    STRANGER,
    base_registry,
    ephemeral_seeds,
    make_op,
    raw_envelope,
    revoked_registry,
)
from sddsf.crypto import Ed25519SigningKey
from sddsf.errors import DecodeError, DecryptError, SddsfError, SignatureError
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.envelope import TreeHeadRef, decode_envelope, open_op
from sddsf.protocol.keypackage import build_key_package, decode_key_package, verify_key_package
from sddsf.protocol.merkle import MerkleTree, leaf_hash
from sddsf.protocol.registry import add_device, decode_entry, revoke_device
from sddsf.protocol.rules import (
    ChainHead,
    EpochWindow,
    MemoryChainView,
    Outcome,
    verify_batch,
    verify_op,
)
from sddsf.protocol.snapshot import decode_snapshot, seal_snapshot, verify_snapshot
from sddsf.protocol.treehead import decode_tree_head, sign_tree_head, verify_tree_head
from sddsf.protocol.vv import VersionVector

RELAY = Ed25519SigningKey.from_seed(bytes([0x60]) * 32)
EPOCHS = EpochWindow(current=2, started_ms=NOW_MS - 1000)


@cache
def chain_with_first_op() -> tuple[MemoryChainView, bytes]:
    """D1's first op accepted; returns the chain view and D1's second op (valid next)."""
    chains = MemoryChainView()
    first = decode_envelope(make_op(D1, deps={D2.device_id: 2}))
    chains.record(first)
    second = make_op(D1, seq=2, prev=first.op_id, deps={D2.device_id: 3, D3.device_id: 1},
                     epoch=2, counter=4, seen=TreeHeadRef(7, bytes([0x5A]) * 32),
                     plaintext=b"a CRDT update of some length")
    return chains, second


def verify(data: bytes, chains: MemoryChainView, now_ms: int | None = NOW_MS) -> Outcome:
    return verify_op(data, space=SPACE, registry=base_registry().state, epochs=EPOCHS,
                     chains=chains, now_ms=now_ms).outcome


def flip(data: bytes, pos: int, xor: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= xor
    return bytes(out)


XOR = st.integers(1, 255)


def flips(data: bytes) -> st.SearchStrategy[tuple[int, int]]:
    """(position, xor) pairs for a single-byte mutation of ``data``."""
    return st.tuples(st.integers(0, len(data) - 1), XOR)


SOME_XORS = (0x01, 0x80, 0xFF)  # low bit, high bit, every bit: used for exhaustive sweeps


# ------------------------------------------------------------- #1 / #16 flips


def test_the_unmutated_envelope_is_accepted() -> None:
    chains, second = chain_with_first_op()
    assert verify(second, chains) is Outcome.ACCEPT


def test_every_position_flipped_in_an_envelope_is_rejected() -> None:
    chains, second = chain_with_first_op()
    for pos in range(len(second)):
        for xor in SOME_XORS:
            with pytest.raises(SddsfError):
                verify(flip(second, pos, xor), chains)


@settings(max_examples=300)
@given(flips(chain_with_first_op()[1]))
def test_any_byte_flip_of_an_envelope_is_rejected(mutation: tuple[int, int]) -> None:
    chains, second = chain_with_first_op()
    with pytest.raises(SddsfError):
        verify(flip(second, *mutation), chains)


@settings(max_examples=150)
@given(flips(chain_with_first_op()[1]))
def test_any_byte_flip_of_an_envelope_is_rejected_in_history_mode(
        mutation: tuple[int, int]) -> None:
    chains, second = chain_with_first_op()
    with pytest.raises(SddsfError):
        verify(flip(second, *mutation), chains, now_ms=None)


@settings(max_examples=150)
@given(flips(chain_with_first_op()[1]))
def test_any_byte_flip_of_an_envelope_fails_to_open(mutation: tuple[int, int]) -> None:
    pos, xor = mutation
    _, second = chain_with_first_op()
    try:
        env = decode_envelope(flip(second, pos, xor))
    except DecodeError:
        return
    try:
        plaintext = open_op(env, EPOCH_KEY)
    except DecryptError:
        return
    # Only a flip inside the signature leaves header and ciphertext intact.
    assert plaintext == b"a CRDT update of some length"
    with pytest.raises(SignatureError):
        env.verify_signature(D1.signing.public)


@cache
def registry_entries() -> dict[str, bytes]:
    state = base_registry().state
    return {
        "add": add_device(state, D2, D4, "new phone", NOW_MS + 5),
        "revoke": revoke_device(state, D1, D2.device_id, "lost", NOW_MS + 5),
    }


def test_the_unmutated_registry_entries_apply() -> None:
    state = base_registry().state
    for entry in registry_entries().values():
        assert state.apply(entry).seq == state.seq + 1


@pytest.mark.parametrize("kind", ["add", "revoke"])
def test_every_position_flipped_in_a_registry_entry_is_rejected(kind: str) -> None:
    state = base_registry().state
    entry = registry_entries()[kind]
    for pos in range(len(entry)):
        for xor in SOME_XORS:
            with pytest.raises(SddsfError):
                state.apply(flip(entry, pos, xor))


@settings(max_examples=300)
@given(st.sampled_from(["add", "revoke"]).flatmap(
    lambda kind: st.tuples(st.just(kind), flips(registry_entries()[kind]))))
def test_any_byte_flip_of_a_registry_entry_is_rejected(case: tuple[str, tuple[int, int]]) -> None:
    kind, mutation = case
    state = base_registry().state
    with pytest.raises(SddsfError):
        state.apply(flip(registry_entries()[kind], *mutation))


@cache
def key_package() -> bytes:
    state = base_registry().state
    return build_key_package(creator=D1, registry=state, space=SPACE, epoch=0,
                             prev=bytes(32), epoch_key=EPOCH_KEY, ts_ms=NOW_MS,
                             ephemeral_seeds=ephemeral_seeds(state))


def test_every_position_flipped_in_a_key_package_is_rejected() -> None:
    state = base_registry().state
    verify_key_package(key_package(), registry=state, space=SPACE, previous=None)
    for pos in range(len(key_package())):
        for xor in SOME_XORS:
            with pytest.raises(SddsfError):
                verify_key_package(flip(key_package(), pos, xor), registry=state, space=SPACE,
                                   previous=None)


@settings(max_examples=150)
@given(flips(key_package()))
def test_any_byte_flip_of_a_key_package_is_rejected(mutation: tuple[int, int]) -> None:
    with pytest.raises(SddsfError):
        verify_key_package(flip(key_package(), *mutation), registry=base_registry().state,
                           space=SPACE, previous=None)


TREE_HEAD = sign_tree_head(RELAY, log=SPACE, size=9, root=bytes([3]) * 32, ts_ms=NOW_MS)


def test_the_unmutated_tree_head_verifies() -> None:
    assert verify_tree_head(TREE_HEAD, RELAY.public, log=SPACE).size == 9


def test_every_position_flipped_in_a_tree_head_is_rejected() -> None:
    for pos in range(len(TREE_HEAD)):
        for xor in SOME_XORS:
            with pytest.raises(SddsfError):
                verify_tree_head(flip(TREE_HEAD, pos, xor), RELAY.public, log=SPACE)


@cache
def snapshot() -> bytes:
    tree = MerkleTree(leaf_hash(bytes([i])) for i in range(11))  # a 3-hash frontier
    return seal_snapshot(
        D1, space=SPACE, epoch=2, epoch_key=EPOCH_KEY, size=11, frontier=tree.frontier(),
        chains={D1.device_id: ChainHead(4, bytes([0x11]) * 32, VersionVector({D2.device_id: 3})),
                D2.device_id: ChainHead(3, bytes([0x22]) * 32, VersionVector())},
        docs={"notes": b"a yjs state", "todo": b"another one"}, ts_ms=NOW_MS,
        nonce=bytes([0x5E]) * 24)


def verify_snap(data: bytes) -> object:
    return verify_snapshot(data, registry=base_registry().state, space=SPACE,
                           epoch_keys={2: EPOCH_KEY})


def test_the_unmutated_snapshot_verifies() -> None:
    snap = verify_snapshot(snapshot(), registry=base_registry().state, space=SPACE,
                           epoch_keys={2: EPOCH_KEY})
    assert (snap.size, len(snap.frontier), snap.docs["todo"]) == (11, 3, b"another one")


def test_every_position_flipped_in_a_snapshot_is_rejected() -> None:
    for pos in range(len(snapshot())):
        for xor in SOME_XORS:
            with pytest.raises(SddsfError):
                verify_snap(flip(snapshot(), pos, xor))


@settings(max_examples=300)
@given(flips(snapshot()))
def test_any_byte_flip_of_a_snapshot_is_rejected(mutation: tuple[int, int]) -> None:
    with pytest.raises(SddsfError):
        verify_snap(flip(snapshot(), *mutation))


# -------------------------------------------------------------- #3 transplant

BASE_OP = make_op(D1, epoch=2, plaintext=b"context-bound")

TRANSPLANTS: dict[str, st.SearchStrategy[object]] = {
    "space": st.binary(min_size=16, max_size=16),
    "doc": st.binary(min_size=16, max_size=16),
    "author": st.sampled_from([D2.device_id, D3.device_id]),
    "seq": st.integers(2, 2**64 - 1),
    "epoch": st.integers(0, 1),  # older epochs pass the history-mode epoch rule
}


@st.composite
def transplanted(draw: st.DrawFn) -> tuple[str, bytes]:
    field = draw(st.sampled_from(sorted(TRANSPLANTS)))
    env = decode_envelope(BASE_OP)
    wire = env.header.to_wire()
    value = draw(TRANSPLANTS[field].filter(lambda v: v != wire[field]))
    wire[field] = value
    return field, raw_envelope(wire, ciphertext=env.ciphertext, signature=env.signature)


@settings(max_examples=200)
@given(transplanted())
def test_transplanted_op_is_rejected(case: tuple[str, bytes]) -> None:
    field, data = case
    env = decode_envelope(data)
    r = base_registry().state
    # D3 must be an active author for the "author" transplant to reach the signature rule.
    registry = r.apply(add_device(r, D1, D3, "tablet", NOW_MS)) if field == "author" else r
    # Submit it where it now claims to belong, in history mode with the epoch known:
    # every rule but the signature (and the chain, checked after it) is satisfied.
    with pytest.raises(SignatureError):
        verify_op(data, space=env.header.space, registry=registry, epochs=EPOCHS,
                  chains=MemoryChainView(), now_ms=None)
    with pytest.raises(DecryptError):
        open_op(env, EPOCH_KEY)


def test_base_op_for_transplants_is_valid() -> None:
    assert verify(BASE_OP, MemoryChainView()) is Outcome.ACCEPT
    assert open_op(decode_envelope(BASE_OP), EPOCH_KEY) == b"context-bound"


def test_registry_signature_is_not_an_op_signature() -> None:
    # A registry "by" signature reused as an op signature (cross-structure transplant).
    env = decode_envelope(BASE_OP)
    entry = decode_entry(registry_entries()["revoke"])
    data = raw_envelope(env.header_bytes, ciphertext=env.ciphertext,
                        signature=entry.signature)
    with pytest.raises(SignatureError):
        verify(data, MemoryChainView())


# ------------------------------------------------------------ #17 decoders

DECODERS: dict[str, Callable[[bytes], object]] = {
    "envelope": decode_envelope,
    "entry": decode_entry,
    "key_package": decode_key_package,
    "tree_head": decode_tree_head,
    "snapshot": decode_snapshot,
}

JUNK_SCALARS = (st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1)
                | st.binary(max_size=40) | st.text(max_size=10))
JUNK = st.recursive(JUNK_SCALARS,
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), inner,
                                      max_size=4),
                    max_leaves=12)
B16 = st.binary(min_size=16, max_size=16)
B32 = st.binary(min_size=32, max_size=32)
B64 = st.binary(min_size=64, max_size=64)
SMALL_INT = st.integers(-2, 3) | st.integers(0, 2**64 - 1)
FIELD_VALUE: dict[str, st.SearchStrategy[object]] = {
    "v": st.sampled_from([1] * 8 + [0, 2]), "suite": st.sampled_from([1] * 8 + [2]),
    "space": B16, "doc": B16, "author": B32, "seq": SMALL_INT, "prev": B32, "epoch": SMALL_INT,
    "deps": st.lists(st.lists(B32 | SMALL_INT, min_size=2, max_size=2), max_size=3),
    "ts": st.lists(st.integers(-1, 2**48), min_size=2, max_size=2),
    "seen": st.none() | st.lists(SMALL_INT | B32, min_size=2, max_size=2),
    "nonce": st.binary(min_size=24, max_size=24), "account": B32, "signer": B32,
    "type": st.sampled_from(["genesis", "add", "revoke", "policy", "recover", "other"]),
    "device": st.fixed_dictionaries({"sign": B32 | st.just(D1.signing.public.raw),
                                     "kx": B32 | st.just(D1.kx.public),
                                     "name": st.text(max_size=5)}),
    "target": B32, "reason": st.text(max_size=5),
    "cutoff": st.lists(st.lists(st.binary(min_size=16, max_size=16) | SMALL_INT, min_size=2,
                                max_size=2), max_size=2),
    "policy": st.dictionaries(st.text(max_size=4), st.booleans() | SMALL_INT | JUNK, max_size=3),
    "revoke": st.lists(st.lists(B32 | JUNK | st.just([]), min_size=2, max_size=2) | JUNK,
                       max_size=3), "account_key": B32, "recovery_key": B32,
    "creator": B32, "registry_seq": SMALL_INT,
    "recipients": st.lists(st.lists(B32 | st.binary(min_size=48, max_size=150), min_size=2,
                                    max_size=2), max_size=3),
    "log": st.binary(max_size=70), "size": SMALL_INT, "root": B32,
    "frontier": st.lists(B32 | JUNK, max_size=4),
    "chains": st.lists(st.lists(B32 | SMALL_INT | st.lists(st.lists(B32 | SMALL_INT, max_size=2),
                                                           max_size=2), min_size=4, max_size=4)
                       | JUNK, max_size=3),
    "ct": st.binary(min_size=16, max_size=60),
}
BODY_FIELDS: dict[str, tuple[str, ...]] = {
    "envelope": ("v", "suite", "space", "doc", "author", "seq", "prev", "deps", "epoch", "ts",
                 "seen", "nonce"),
    "key_package": ("v", "space", "epoch", "prev", "creator", "ts", "registry_seq",
                    "recipients"),
    "tree_head": ("v", "log", "size", "root", "ts"),
    "snapshot": ("v", "space", "author", "epoch", "size", "root", "frontier", "chains", "ts",
                 "nonce", "ct"),
}
ENTRY_FIELDS: dict[str, tuple[str, ...]] = {
    "genesis": ("account_key", "recovery_key", "device"), "add": ("device",),
    "revoke": ("target", "reason", "cutoff"), "policy": ("policy",),
    "recover": ("device", "revoke"),
    "other": ("device",),
}
ENTRY_COMMON = ("v", "account", "seq", "prev", "type", "ts", "signer")


def mostly(draw: st.DrawFn, good: st.SearchStrategy[object]) -> object:
    """A draw from ``good`` nine times in ten, otherwise junk."""
    return draw(JUNK) if draw(st.integers(0, 9)) == 9 else draw(good)


@st.composite
def shaped(draw: st.DrawFn, name: str) -> bytes:
    """The outer shape of ``name`` around a body with its real field names and random values.

    Most parts have a plausible type, so decoding gets past the first checks and reaches
    the field-level and cross-field ones.
    """
    if name == "entry":
        etype = draw(FIELD_VALUE["type"])
        keys: tuple[str, ...] = ENTRY_COMMON + ENTRY_FIELDS[str(etype)]
    else:
        keys = BODY_FIELDS[name]
    body: dict[str, object] = {}
    for key in keys:
        if draw(st.integers(0, 19)) == 19:
            continue  # a missing field
        good = SMALL_INT if key == "ts" and name != "envelope" else FIELD_VALUE[key]
        body[key] = etype if key == "type" else mostly(draw, good)
    version = mostly(draw, st.just(1))
    if name == "envelope":
        ciphertext = mostly(draw, st.binary(min_size=16, max_size=40))
        outer = [version, encode(body), ciphertext, mostly(draw, B64)]
    elif name == "entry":
        sigs = mostly(draw, st.fixed_dictionaries({"by": B64}, optional={"new": B64}))
        outer = [version, encode(body), sigs]
    else:
        outer = [version, encode(body), mostly(draw, B64)]
    return encode(outer)


def decode_or_decode_error(decoder: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decoder(data)


@settings(max_examples=200)
@given(st.sampled_from(sorted(DECODERS)), st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(name: str, data: bytes) -> None:
    decode_or_decode_error(DECODERS[name], data)


@settings(max_examples=300)
@given(st.sampled_from(sorted(DECODERS)).flatmap(lambda n: st.tuples(st.just(n), shaped(n))))
def test_shaped_junk_raises_only_decode_error(case: tuple[str, bytes]) -> None:
    name, data = case
    decode_or_decode_error(DECODERS[name], data)


@settings(max_examples=200)
@given(st.sampled_from(sorted(DECODERS)), JUNK)
def test_any_canonical_value_raises_only_decode_error(name: str, value: object) -> None:
    decode_or_decode_error(DECODERS[name], encode(value))


VALID_SAMPLES: dict[str, Callable[[], bytes]] = {
    "envelope": lambda: chain_with_first_op()[1],
    "entry": lambda: registry_entries()["add"],
    "key_package": key_package,
    "tree_head": lambda: TREE_HEAD,
    "snapshot": snapshot,
}


@settings(max_examples=300)
@given(st.sampled_from(sorted(DECODERS)), st.data())
def test_mutated_valid_structures_raise_only_decode_error(name: str, data: st.DataObject) -> None:
    raw = bytearray(VALID_SAMPLES[name]())
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(XOR)
    cut = data.draw(st.integers(0, len(raw)))
    decode_or_decode_error(DECODERS[name], bytes(raw[:cut]))
    decode_or_decode_error(DECODERS[name], bytes(raw))


def test_every_inner_header_mutation_is_rejected() -> None:
    # Mutate inside the header bytes only, re-wrapping them in a well-formed envelope,
    # so that the header decoder and the rules see every kind of damaged header.
    chains, second = chain_with_first_op()
    outer = decode(second)
    assert isinstance(outer, list)
    for pos in range(len(outer[1])):
        for xor in SOME_XORS:
            data = encode([outer[0], flip(outer[1], pos, xor), outer[2], outer[3]])
            with pytest.raises(SddsfError):
                verify(data, chains)


def test_stranger_signed_op_with_valid_structure_is_rejected() -> None:
    with pytest.raises(SddsfError):
        verify(make_op(STRANGER), MemoryChainView())


def apply_to_base_registry(data: bytes) -> object:
    return base_registry().state.apply(data)


VERIFIERS: dict[str, Callable[[bytes], object]] = {
    "envelope": lambda data: verify(data, chain_with_first_op()[0]),
    "entry": apply_to_base_registry,
    "key_package": lambda data: verify_key_package(data, registry=base_registry().state,
                                                   space=SPACE, previous=None),
    "tree_head": lambda data: verify_tree_head(data, RELAY.public, log=SPACE),
    "snapshot": verify_snap,
}


@settings(max_examples=200)
@given(st.sampled_from(sorted(VERIFIERS)).flatmap(lambda n: st.tuples(st.just(n), shaped(n))))
def test_shaped_junk_is_rejected_by_verifiers_with_sddsf_errors_only(
        case: tuple[str, bytes]) -> None:
    name, data = case
    with pytest.raises(SddsfError):
        VERIFIERS[name](data)


# --------------------------------------- verify_batch is verify_op, op by op


@st.composite
def _batch(draw: st.DrawFn) -> tuple[list[bytes], EpochWindow, int | None]:
    """Ops of D1 and D2 (revoked registry: D3 revoked at entry 3) with random ``reg``,
    epochs, seqs (gaps, forks, repeats) and a window whose packages predate the
    revocation or not."""
    seqs = draw(st.sampled_from([(0, 0), (2, 3), (3, 3), (2, 2)]))
    window = EpochWindow(current=1, started_ms=NOW_MS - draw(st.sampled_from([1000, 10**10])),
                         package_seqs=seqs)
    ops: list[bytes] = []
    heads: dict[bytes, tuple[int, bytes]] = {}
    for i in range(draw(st.integers(1, 8))):
        author = draw(st.sampled_from([D1, D2]))
        seq, prev = heads.get(author.device_id, (0, bytes(32)))
        if draw(st.booleans()) and ops:
            ops.append(draw(st.sampled_from(ops)))  # a repeat: duplicate or fork evidence
            continue
        step = draw(st.sampled_from([1, 1, 1, 2]))  # sometimes a gap
        raw = make_op(author, seq=seq + step, prev=prev if step == 1 else bytes([i]) * 32,
                      epoch=draw(st.integers(0, 1)), reg=draw(st.integers(0, 4)),
                      plaintext=bytes([i]))
        if step == 1:
            heads[author.device_id] = (seq + 1, decode_envelope(raw).op_id)
        ops.append(raw)
    return ops, window, draw(st.sampled_from([NOW_MS, None]))


@given(_batch())
@settings(max_examples=60, deadline=None)
def test_verify_batch_equals_verify_op_in_order(
        case: tuple[list[bytes], EpochWindow, int | None]) -> None:
    ops, window, now = case
    state = revoked_registry().state
    one = MemoryChainView()
    expected: list[tuple[str, object]] = []
    for raw in ops:
        try:
            verdict = verify_op(raw, space=SPACE, registry=state, epochs=window, chains=one,
                                now_ms=now)
        except SddsfError as exc:
            expected.append(("error", exc.code))
            continue
        if verdict.outcome is Outcome.ACCEPT:
            one.record(verdict.envelope)
        expected.append((verdict.outcome.value, verdict.envelope.op_id))
    got = [("error", r.code) if isinstance(r, SddsfError) else (r.outcome.value, r.envelope.op_id)
           for r in verify_batch(ops, space=SPACE, registry=state, epochs=window,
                                 chains=MemoryChainView(), now_ms=now, chunks=3)]
    assert got == expected
