"""A new device's first sync from one signed bundle (protocol 17.9).

Real devices against the real relay app on SQLite (in process), through a
transport that records every request and can play a malicious relay: one that
serves a bundle whose components it altered and then signed with its own key,
or a network that alters the bundle after it was signed. Each altered component
must be refused with the error the per-endpoint path gives for the same
alteration, with the same local state left behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pycrdt
import pytest
from clientkit import InProcessRelay
from relaykit import Clock

from sddsf.client.device import Device
from sddsf.client.engine import keyring as keyring_module
from sddsf.crypto import Ed25519PublicKey, Ed25519SigningKey
from sddsf.errors import Code, ProofError, SddsfError
from sddsf.protocol import labels
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.labels import labelled
from sddsf.protocol.snapshot import SPACE_SNAPSHOT_DOC
from sddsf.relay.storage import open_storage
from sddsf.testing.malicious_relay import relay_context
from sddsf.wire import b64, unb64

#: The reads a first sync makes one request each for, without a bundle.
PER_ENDPOINT_READS = ("/registry", "/keys", "/snapshot", "/snapshot/attestations", "/ops",
                      "/snapshot-chunks/", "/encryption-policy")
#: Namespaces of the device store a refused first sync is compared on.
STORED = ("reg", "kp", "head", "leaf", "op", "chain", "doc", "docpiece", "docrem", "base",
          "snapbase", "space")

Body = dict[str, Any]


def flip(raw: bytes) -> bytes:
    """The bytes with their last bit flipped (a signature, a tag or a hash input)."""
    return raw[:-1] + bytes([raw[-1] ^ 1])


class Wire(httpx.AsyncBaseTransport):
    """The relay app, with every request recorded and answers optionally altered."""

    def __init__(self, inner: httpx.AsyncBaseTransport, relay_key: Ed25519SigningKey) -> None:
        self.inner = inner
        self.relay_key = relay_key
        self.requests: list[str] = []
        #: Drop the session's feature list (an older relay).
        self.old_relay = False
        #: List the feature but answer 404 (a node being upgraded).
        self.no_endpoint = False
        #: Alters a bundle's body, then the relay signs it (a malicious relay).
        self.alter_bundle: Callable[[Body], None] | None = None
        #: Alters a bundle after it was signed (the network).
        self.alter_signed: Callable[[bytes], bytes] | None = None
        #: Alters an endpoint's JSON answer: (path, answer) -> None.
        self.alter_endpoint: Callable[[str, Body], None] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(f"{request.method} {path}")
        if path == "/v1/bootstrap" and self.no_endpoint:
            return httpx.Response(404, json={"code": "not_found", "message": "no such route"})
        response = await self.inner.handle_async_request(request)
        if response.status_code != 200 or (request.method != "GET" and \
                path != "/v1/auth/session"):
            return response
        await response.aread()
        answer = json.loads(response.content)
        if path == "/v1/auth/session" and self.old_relay:
            answer.pop("features", None)
        elif path == "/v1/bootstrap":
            answer["bundle"] = b64(self.bundle(unb64(answer["bundle"])))
        elif self.alter_endpoint is not None:
            self.alter_endpoint(path, answer)
        return httpx.Response(200, json=answer)

    def bundle(self, raw: bytes) -> bytes:
        if self.alter_bundle is not None:
            version, body_bytes, _ = decode(raw)  # type: ignore[misc]
            body = decode(body_bytes)
            assert isinstance(body, dict)
            self.alter_bundle(body)
            body_bytes = encode(body)
            raw = encode([version, body_bytes, self.relay_key.sign(
                labelled(labels.BOOTSTRAP_SIG, body_bytes))])
        return self.alter_signed(raw) if self.alter_signed is not None else raw

    def used_bundle(self) -> bool:
        return "GET /v1/bootstrap" in self.requests

    def endpoint_reads(self) -> list[str]:
        return [r for r in self.requests if r.startswith("GET ") and r != "GET /v1/bootstrap"
                and any(p in r for p in PER_ENDPOINT_READS)]


class WiredRelay(InProcessRelay):
    """clientkit's in-process relay, reached by every device through one :class:`Wire`."""

    def __init__(self, storage: Any, clock: Clock) -> None:
        super().__init__(storage, clock)
        self.wire = Wire(httpx.ASGITransport(app=self.app),
                         relay_context(self.app).fabric.relay_key)

    def transport(self) -> httpx.AsyncBaseTransport:
        return self.wire


@dataclass
class Setup:
    relay: WiredRelay
    laptop: Device
    space: bytes
    expected: dict[str, Any]


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[WiredRelay]:
    storage = open_storage(f"sqlite:///{tmp_path / 'relay.db'}")
    await storage.open()
    yield WiredRelay(storage, Clock(time.time_ns() // 1_000_000))
    await storage.close()


def kv(device: Device, space: bytes) -> dict[str, Any]:
    return dict(device.doc(space, "kv").get("kv", type=pycrdt.Map))


@pytest.fixture
async def setup(relay: WiredRelay, tmp_path: Path) -> AsyncIterator[Setup]:
    """A laptop's space: 30 ops, a snapshot of them, then 5 more ops (the tail)."""
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    laptop.snapshot_every = 0
    space = await laptop.create_space("notes")
    m = laptop.doc(space, "kv").get("kv", type=pycrdt.Map)
    for i in range(35):
        m[f"k{i % 7}"] = f"value {i}"
        laptop.flush()
        if i == 29:
            await laptop.sync()
            assert await laptop.snapshot(space) is not None
    await laptop.sync()
    yield Setup(relay, laptop, space, kv(laptop, space))
    await laptop.close()


async def new_device(s: Setup, home: Path) -> Device:
    """A new device; then another one, so that the registry grew since it was added."""
    phone = await s.relay.add(s.laptop, home, "phone")
    await (await s.relay.add(s.laptop, home.with_name(home.name + "-tablet"), "tablet")).close()
    s.relay.wire.requests.clear()
    return phone


def stored(device: Device) -> dict[str, list[tuple[bytes, bytes]]]:
    return {ns: device.store.scan(ns) for ns in STORED}


async def test_first_sync_reads_everything_from_one_bundle(setup: Setup,
                                                           tmp_path: Path) -> None:
    phone = await new_device(setup, tmp_path / "phone")
    report = await phone.sync()
    wire = setup.relay.wire
    assert wire.used_bundle()
    assert wire.endpoint_reads() == []  # registry, keys, snapshot, chunk, tail: all bundled
    assert report.snapshots_loaded == 1
    assert kv(phone, setup.space) == setup.expected
    wire.requests.clear()
    edit = setup.laptop.doc(setup.space, "kv").get("kv", type=pycrdt.Map)
    edit["later"] = "yes"
    await setup.laptop.sync()
    await phone.sync()  # a later sync reads from the endpoints again
    assert not wire.used_bundle() and kv(phone, setup.space) == kv(setup.laptop, setup.space)
    await phone.close()


async def test_a_first_sync_checks_each_signature_once(setup: Setup, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The snapshot's signature was checked to judge it, then again to open it.
    phone = await new_device(setup, tmp_path / "phone")
    checked: list[tuple[bytes, bytes]] = []
    verify = Ed25519PublicKey.verify

    def counting(key: Ed25519PublicKey, message: bytes, signature: bytes) -> None:
        checked.append((key.raw, bytes(signature)))
        verify(key, message, signature)

    monkeypatch.setattr(Ed25519PublicKey, "verify", counting)
    report = await phone.sync()
    assert report.snapshots_loaded == 1 and kv(phone, setup.space) == setup.expected
    assert checked and len(checked) == len(set(checked))
    await phone.close()


async def test_an_older_relay_gets_the_per_endpoint_reads(setup: Setup,
                                                          tmp_path: Path) -> None:
    setup.relay.wire.old_relay = True
    phone = await new_device(setup, tmp_path / "phone")
    report = await phone.sync()
    assert not setup.relay.wire.used_bundle()
    assert any("/keys" in r for r in setup.relay.wire.endpoint_reads())
    assert report.snapshots_loaded == 1 and kv(phone, setup.space) == setup.expected
    await phone.close()


async def test_a_node_without_the_endpoint_gets_the_per_endpoint_reads(
        setup: Setup, tmp_path: Path) -> None:
    setup.relay.wire.no_endpoint = True
    phone = await new_device(setup, tmp_path / "phone")
    report = await phone.sync()
    assert setup.relay.wire.used_bundle()  # asked, refused 404
    assert any("/keys" in r for r in setup.relay.wire.endpoint_reads())
    assert report.snapshots_loaded == 1 and kv(phone, setup.space) == setup.expected
    await phone.close()


async def test_what_does_not_fit_the_bundle_is_read_from_its_endpoint(
        setup: Setup, tmp_path: Path) -> None:
    # A relay whose responses are too small for the tail (five ops of 3 KB)
    # leaves it out; the device reads it from its endpoint.
    m = setup.laptop.doc(setup.space, "kv").get("kv", type=pycrdt.Map)
    for i in range(5):
        m[f"big{i}"] = "x" * 3000
        setup.laptop.flush()
    await setup.laptop.sync()
    ctx = relay_context(setup.relay.app)
    ctx.settings = ctx.settings.replace(max_request_bytes=16 * 1024)
    phone = await new_device(setup, tmp_path / "phone")
    report = await phone.sync()
    wire = setup.relay.wire
    assert wire.used_bundle()
    assert not any("/registry" in r or "/keys" in r for r in wire.endpoint_reads())
    assert any("/ops" in r for r in wire.endpoint_reads()), wire.requests
    assert report.snapshots_loaded == 1
    assert kv(phone, setup.space) == kv(setup.laptop, setup.space)
    await phone.close()


# ---------------------------------------------------------- a malicious relay
def _space(body: Body) -> Body:
    space = body["spaces"][0]
    assert isinstance(space, dict)
    return space


def _registry(body: Body) -> None:
    body["registry"][-1] = flip(body["registry"][-1])


def _registry_json(path: str, answer: Body) -> None:
    if path.endswith("/registry") and answer["entries"]:
        answer["entries"][-1] = b64(flip(unb64(answer["entries"][-1])))


def _keys(body: Body) -> None:
    _space(body)["keys"][0] = flip(_space(body)["keys"][0])


def _keys_json(path: str, answer: Body) -> None:
    if path.endswith("/keys"):
        answer["key_packages"][0] = b64(flip(unb64(answer["key_packages"][0])))


def _snapshot(body: Body) -> None:
    snap = next(n for n in _space(body)["snaps"] if n[0] == SPACE_SNAPSHOT_DOC)
    snap[2] = flip(snap[2])


def _snapshot_json(path: str, answer: Body) -> None:
    if path.endswith(f"/docs/{b64(SPACE_SNAPSHOT_DOC)}/snapshot"):
        answer["blob"] = b64(flip(unb64(answer["blob"])))


def _chunk(body: Body) -> None:
    chunk = _space(body)["chunks"][0]
    chunk[1] = flip(chunk[1])


def _chunk_json(path: str, answer: Body) -> None:
    if "/snapshot-chunks/" in path:
        answer["blob"] = b64(flip(unb64(answer["blob"])))


def _tail_op(body: Body) -> None:
    op = _space(body)["ops"][0]
    op[3] = flip(op[3])


def _tail_op_json(path: str, answer: Body) -> None:
    if path.endswith("/ops") and answer["ops"]:
        answer["ops"][0]["envelope"] = b64(flip(unb64(answer["ops"][0]["envelope"])))


_ALTERED = [("registry entry", _registry, _registry_json),
            ("key package", _keys, _keys_json),
            ("snapshot manifest", _snapshot, _snapshot_json),
            ("snapshot chunk", _chunk, _chunk_json),
            ("tail op", _tail_op, _tail_op_json)]


async def _refusal(s: Setup, home: Path, *, bundle: Callable[[Body], None] | None = None,
                   endpoint: Callable[[str, Body], None] | None = None
                   ) -> tuple[SddsfError, dict[str, list[tuple[bytes, bytes]]], bool]:
    """The refusal of a new device's first sync, the rows it stored, and whether it
    read the bundle."""
    wire = s.relay.wire
    wire.old_relay = bundle is None  # (the session is opened when the device is added)
    phone = await new_device(s, home)
    wire.alter_bundle, wire.alter_endpoint = bundle, endpoint
    before = stored(phone)
    try:
        with pytest.raises(SddsfError) as info:
            await phone.sync()
        after = stored(phone)
        added = {ns: [row for row in rows if row not in before[ns]] for ns, rows in after.items()}
        return info.value, added, wire.used_bundle()
    finally:
        wire.old_relay, wire.alter_bundle, wire.alter_endpoint = False, None, None
        await phone.close()


@pytest.mark.parametrize(("bundle", "endpoint"), [(b, e) for _, b, e in _ALTERED],
                         ids=[i for i, _, _ in _ALTERED])
async def test_a_component_altered_by_the_relay_is_refused_as_from_its_endpoint(
        setup: Setup, tmp_path: Path, bundle: Callable[[Body], None],
        endpoint: Callable[[str, Body], None]) -> None:
    by_endpoint, left_by_endpoint, used = await _refusal(setup, tmp_path / "a",
                                                         endpoint=endpoint)
    assert not used
    by_bundle, left_by_bundle, used = await _refusal(setup, tmp_path / "b", bundle=bundle)
    assert used
    assert (type(by_bundle), by_bundle.code) == (type(by_endpoint), by_endpoint.code)
    assert by_bundle.message == by_endpoint.message
    # The refused sync stored the same kinds of rows as when the endpoint served
    # the altered part (the two devices joined at different epochs, so counts
    # differ), and nothing of the log: no head, leaf, op or document.
    assert {ns for ns, rows in left_by_bundle.items() if rows} == {
        ns for ns, rows in left_by_endpoint.items() if rows}
    for ns in ("head", "leaf", "op", "doc", "docpiece", "snapbase"):
        assert left_by_bundle[ns] == []


async def test_a_bundle_altered_on_the_way_is_refused_and_nothing_is_stored(
        setup: Setup, tmp_path: Path) -> None:
    phone = await new_device(setup, tmp_path / "phone")
    before = stored(phone)
    setup.relay.wire.alter_signed = lambda raw: raw[:40] + bytes([raw[40] ^ 1]) + raw[41:]
    with pytest.raises(ProofError) as info:
        await phone.sync()
    assert info.value.code is Code.TREE_HEAD_INVALID
    assert "bootstrap bundle" in info.value.message
    assert stored(phone) == before
    setup.relay.wire.alter_signed = None
    await phone.sync()  # the relay's own bundle is then taken
    assert kv(phone, setup.space) == setup.expected
    await phone.close()


async def test_a_bundle_for_another_request_is_refused(setup: Setup, tmp_path: Path) -> None:
    # A bundle the relay signed for an earlier request (another nonce), replayed.
    phone = await new_device(setup, tmp_path / "phone")
    before = stored(phone)
    setup.relay.wire.alter_bundle = lambda body: body.update(nonce=bytes(16))
    with pytest.raises(ProofError) as info:
        await phone.sync()
    assert info.value.code is Code.TREE_HEAD_INVALID and "another request" in info.value.message
    assert stored(phone) == before
    setup.relay.wire.alter_bundle = None
    await phone.close()


# ------------------------------------------------- unchanged key packages
async def test_unchanged_key_packages_are_not_verified_again(
        setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    verified: list[int] = []
    real = keyring_module.kp.verify_key_package

    def counting(data: bytes, **kwargs: Any) -> Any:
        pkg = real(data, **kwargs)
        verified.append(pkg.epoch)
        return pkg

    monkeypatch.setattr(keyring_module.kp, "verify_key_package", counting)
    phone = await new_device(setup, tmp_path / "phone")
    await phone.sync()
    assert verified and verified == sorted(set(verified))  # first sync: each once
    first = len(verified)
    verified.clear()
    await phone.sync()
    assert verified == []  # nothing changed: nothing verified again
    epoch = await setup.laptop.rotate(setup.space)
    await phone.sync()
    assert verified == [epoch]  # only the new package
    verified.clear()
    # A package the relay swapped for another is verified (and refused) again.
    setup.relay.wire.old_relay = True
    setup.relay.wire.alter_endpoint = _keys_json
    with pytest.raises(SddsfError):
        await phone.sync()
    assert first >= 1
    await phone.close()


# ------------------------------------------------- the relay's reads for a bundle
async def test_the_bundle_is_read_in_few_storage_calls(setup: Setup, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Each storage call is a hand-over to the database's worker (or pool) and
    back: the bundle's reads are grouped, and their number does not grow with
    the account's spaces (one listing for all of them)."""
    storage = setup.relay.storage
    real = storage._run  # type: ignore[attr-defined]
    calls: list[int] = []

    async def counted(fn: Any) -> Any:
        calls.append(1)
        return await real(fn)

    monkeypatch.setattr(storage, "_run", counted)
    phone = await new_device(setup, tmp_path / "phone")
    calls.clear()
    body = await phone.engine.transport.client.bootstrap(bytes(16))  # type: ignore[attr-defined]
    assert body
    # The session's registry, the bundle's registry, the listing, the space, its
    # chunk. Before: 15 (the listing alone 4, each snapshot read twice).
    assert len(calls) <= 5, len(calls)
    for name in ("a", "b", "c"):
        await setup.laptop.create_space(name)
    calls.clear()
    await phone.engine.transport.client.list_spaces()  # type: ignore[attr-defined]
    assert len(calls) <= 2, len(calls)  # the session's registry, the listing (before: 11)
    await phone.close()
