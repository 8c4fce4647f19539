"""Attacks on peer-to-peer sync (protocol.md 23.6-23.8; docs/threat-model.md 4.8)
by an authorised but malicious peer (a device of the account, with its real
keys, running its own code) and by outsiders.

The first half judges crafted ops, registry entries and key packages with the
engine of real devices (:class:`sddsf.client.engine.mesh.MeshOps`, as a peer's
gossip or catch-up answer reaches it); the second half sends them over real
libp2p on loopback to a device running :class:`sddsf.p2p.sync.PeerSync`, where
the reaction that matters is the service's (disconnecting a forger, refusing a
request, surviving garbage). Every crafted op is sealed with the real author's
keys (:func:`sddsf.protocol.envelope.seal_op`), so only the rule under test can
refuse it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pycrdt
import pytest
from clientkit import InProcessRelay, passphrase, sqlite_relay

from p2pkit import devices, exchange, text, until
from sddsf.client.device import Device
from sddsf.client.engine import mesh as mesh_module
from sddsf.client.events import RemoteChange
from sddsf.crypto import random_bytes
from sddsf.errors import Code, SddsfError, UnavailableError
from sddsf.protocol import p2p
from sddsf.protocol.encoding import encode as encode_raw
from sddsf.protocol.envelope import decode_envelope, open_op, seal_op
from sddsf.protocol.payload import encode_edit

if TYPE_CHECKING:
    from sddsf.p2p.sync import PeerSync

HAVE_LIBP2P = importlib.util.find_spec("libp2p") is not None
if os.environ.get("SDDSF_REQUIRE_P2P") == "1" and not HAVE_LIBP2P:
    raise ImportError("SDDSF_REQUIRE_P2P=1 but libp2p is not installed")
#: The tests over real libp2p; the engine-level ones run without it.
needs_libp2p = pytest.mark.skipif(not HAVE_LIBP2P,
                                  reason="peer-to-peer sync needs the p2p extra (libp2p)")


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    async with sqlite_relay(tmp_path) as r:
        yield r


# ---------------------------------------------------------------- helpers
def edit(dev: Device, space: bytes, s: str) -> bytes:
    """Append ``s`` and seal it: the new op's envelope (not sent anywhere)."""
    t = dev.doc(space, "t").get("t", type=pycrdt.Text)
    t.insert(len(str(t)), s)
    dev.flush()
    return dev.engine.mesh.outgoing(space)[-1][1]


async def close(*devs: Device) -> None:
    for dev in devs:
        await dev.close()


def epoch_key(dev: Device, space: bytes, epoch: int) -> bytes:
    return dev.engine.keyring.keys_cached(space)[epoch]


def reseal(author: Device, raw: bytes, *, body: bytes | None = None, **header: object) -> bytes:
    """``raw`` signed again by its real author with header fields changed (and a
    fresh nonce): a genuine signature over whatever the author chose to say."""
    env = decode_envelope(raw)
    key = epoch_key(author, env.header.space, env.header.epoch)
    plain = open_op(env, key) if body is None else body
    new = dataclasses.replace(env.header, nonce=random_bytes(24), **header)  # type: ignore[arg-type]
    return seal_op(author.keys, new, plain, key).raw


def other_text(s: str) -> bytes:
    """An edit of document "t" made elsewhere (another Yjs client): what a
    forking author would put in its second op."""
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    doc["t"] = t = pycrdt.Text()
    t.insert(0, s)
    return encode_edit("t", [doc.get_update()])


def codes(refused: Sequence[tuple[str, str]]) -> list[str]:
    return [c for c, _ in refused]


# ============================================================ engine level
async def test_replayed_ops_are_known_and_never_applied_again(relay: InProcessRelay,
                                                              tmp_path: Path) -> None:
    (laptop, phone), space = await devices(relay, tmp_path, "laptop", "phone")
    ops = [edit(laptop, space, "a"), edit(laptop, space, "b")]
    changes: list[object] = []
    phone.events.on_change(changes.append)  # each op applied is a RemoteChange event
    assert phone.engine.mesh.accept(space, ops).applied == 2
    assert sum(isinstance(c, RemoteChange) for c in changes) == 2
    rows = list(phone.store.scan("pop", space))
    for _ in range(3):  # a peer replays them, again and again, in any order
        report = phone.engine.mesh.accept(space, ops[::-1])
        assert (report.applied, report.known, report.refused) == (0, 2, [])
    assert sum(isinstance(c, RemoteChange) for c in changes) == 2
    assert text(phone, space) == "ab" and list(phone.store.scan("pop", space)) == rows
    # Its own ops replayed to the author are held too.
    assert laptop.engine.mesh.accept(space, ops).known == 2
    # Once the log holds them (the carried rows are forgotten) they are still held.
    await laptop.sync()
    await phone.sync()
    assert phone.store.count("pop", space) == 0
    report = phone.engine.mesh.accept(space, ops)
    assert (report.applied, report.known) == (0, 2) and text(phone, space) == "ab"
    await close(laptop, phone)


async def test_an_op_of_another_space_is_refused_on_this_spaces_topic(
        relay: InProcessRelay, tmp_path: Path) -> None:
    (laptop, phone), space = await devices(relay, tmp_path, "laptop", "phone")
    diary = await laptop.create_space("diary")
    await laptop.sync()
    await phone.sync()
    secret = edit(laptop, diary, "dear diary")
    # A real op of a real device of the account, for the account's other space:
    # sent on the notes topic (or in a notes catch-up answer), it is refused.
    report = phone.engine.mesh.accept(space, [secret])
    assert codes(report.refused) == [Code.WRONG_CONTEXT.value]
    assert report.applied == 0 and text(phone, space) == "" and text(phone, diary) == ""
    assert phone.store.count("pop", space) == phone.store.count("pop", diary) == 0
    assert phone.engine.mesh.waiting == {}
    # In its own space the same bytes apply.
    assert phone.engine.mesh.accept(diary, [secret]).applied == 1
    await close(laptop, phone)


async def test_a_forged_signature_is_refused_and_blamed(relay: InProcessRelay,
                                                        tmp_path: Path) -> None:
    (laptop, phone), space = await devices(relay, tmp_path, "laptop", "phone")
    real = edit(laptop, space, "real")
    env = decode_envelope(real)
    # Same header, another ciphertext: the author never signed it.
    body = reseal(laptop, real, body=other_text("forged"))
    forged = bytearray(real)
    forged[-64:] = decode_envelope(body).raw[-64:]  # a signature over something else
    report = phone.engine.mesh.accept(space, [bytes(forged)])
    assert codes(report.refused) == [Code.SIG_INVALID.value]
    assert report.blamed == {env.header.author}
    assert phone.engine.mesh.waiting == {} and text(phone, space) == ""
    assert phone.engine.mesh.accept(space, [real]).applied == 1  # the real one still applies
    await close(laptop, phone)


async def test_a_fork_keeps_the_first_op(relay: InProcessRelay, tmp_path: Path) -> None:
    (laptop, phone), space = await devices(relay, tmp_path, "laptop", "phone")
    first = edit(laptop, space, "a")
    h = decode_envelope(first).header
    # The author (its keys stolen, or buggy) signs a second op at the same seq.
    second = reseal(laptop, first, body=other_text("FORK"))
    assert decode_envelope(second).header.seq == h.seq and second != first
    assert phone.engine.mesh.accept(space, [first]).applied == 1
    report = phone.engine.mesh.accept(space, [second])
    assert report.applied == 0 and text(phone, space) == "a"
    assert phone.store.get("pop", space + h.author + h.seq.to_bytes(8, "big")) == first
    # An op built on the second branch does not join the first one's chain.
    after = reseal(laptop, first, body=other_text("BRANCH"), seq=h.seq + 1,
                   prev=decode_envelope(second).op_id)
    report = phone.engine.mesh.accept(space, [after])
    assert codes(report.refused) == [Code.CHAIN_FORK.value] and text(phone, space) == "a"
    # The author's genuine next op still applies.
    assert phone.engine.mesh.accept(space, [edit(laptop, space, "b")]).applied == 1
    assert text(phone, space) == "ab"
    await close(laptop, phone)


async def test_future_seqs_wait_in_bounded_memory_and_never_apply(
        relay: InProcessRelay, tmp_path: Path) -> None:
    (laptop, phone, tablet), space = await devices(relay, tmp_path, "laptop", "phone",
                                                    "tablet")
    real = edit(laptop, space, "a")
    h = decode_envelope(real).header
    cap = mesh_module._MAX_WAITING
    mesh = phone.engine.mesh
    # Valid signatures by a real author, every seq after a gap that is never
    # filled: more than can wait.
    flood = (reseal(laptop, real, seq=h.seq + 2 + i, prev=random_bytes(32))
             for i in range(cap + 200))
    most = 0
    while chunk := list(itertools.islice(flood, p2p.MAX_RESPONSE_OPS)):
        report = mesh.accept(space, chunk)
        most = max(most, len(mesh.waiting))
        assert report.applied == 0 and len(mesh.waiting) <= cap
    assert most == cap and text(phone, space) == ""
    # The flood does not stop the others: an op that applies now still does,
    # and judging it does not walk every waiting op again (that took seconds
    # per message with the room full; it takes milliseconds).
    honest = edit(tablet, space, "t")
    started = time.monotonic()
    report = mesh.accept(space, [honest])
    assert time.monotonic() - started < 0.5
    assert report.applied == 1 and text(phone, space) == "t"
    # The author's real next op applies; the flood built on nothing still does not.
    report = mesh.accept(space, [real])
    assert report.applied == 1 and text(phone, space) in ("at", "ta")
    assert len(mesh.waiting) <= cap
    await close(laptop, phone, tablet)


async def test_an_op_from_the_future_is_refused_clock_skew(relay: InProcessRelay,
                                                           tmp_path: Path) -> None:
    (laptop, phone), space = await devices(relay, tmp_path, "laptop", "phone")
    real = edit(laptop, space, "now")
    h = decode_envelope(real).header
    ahead = phone.clock() + phone.engine.mesh.rules.max_skew_ms + 60_000
    future = reseal(laptop, real, ts=dataclasses.replace(h.ts, wall_ms=ahead))
    report = phone.engine.mesh.accept(space, [future])
    assert codes(report.refused) == [Code.CLOCK_SKEW.value]
    assert report.applied == 0 and text(phone, space) == ""
    assert phone.engine.mesh.accept(space, [real]).applied == 1  # the seq was not taken
    await close(laptop, phone)


async def test_a_revoked_devices_op_beyond_its_cutoff_is_refused(relay: InProcessRelay,
                                                                 tmp_path: Path) -> None:
    (laptop, phone, tablet), space = await devices(relay, tmp_path, "laptop", "phone",
                                                    "tablet")
    logged = edit(tablet, space, "logged ")
    await tablet.sync()
    await laptop.sync()  # the laptop verified it: the cutoff keeps it
    late = edit(tablet, space, "late")  # never reaches the log
    await laptop.revoke(tablet.device_id, "stolen")
    await laptop.sync()
    # The phone learns the revocation from a peer only (signed registry entries).
    req = phone.engine.mesh.request(space)
    resp = laptop.engine.mesh.respond(req, phone.device_id)
    assert phone.engine.mesh.accept_registry(req.registry_seq + 1, resp.registry)
    assert not phone.registry().is_active(tablet.device_id)
    report = phone.engine.mesh.accept(space, [logged, late])
    assert report.applied == 1 and codes(report.refused) == [Code.REVOKED.value]
    assert text(phone, space) == "logged "
    # Sealed again with later seqs or another registry seq: still beyond the cutoff.
    h = decode_envelope(late).header
    again = reseal(tablet, late, reg=phone.registry().seq)
    report = phone.engine.mesh.accept(space, [again])
    assert Code.REVOKED.value in codes(report.refused) and text(phone, space) == "logged "
    assert h.seq > phone.registry().device(tablet.device_id).cutoff.get(space, 0)  # type: ignore[union-attr]
    await close(laptop, phone, tablet)



async def test_a_revocation_after_peer_only_ops_leaves_every_device_equal(
        relay: InProcessRelay, tmp_path: Path) -> None:
    # The tablet's op reached the laptop from a peer only; the laptop revokes the
    # tablet. The revocation carries that op to the log first, so its cutoff keeps
    # it and every device (and a new one, from the log alone) ends equal.
    (laptop, phone, tablet), space = await devices(relay, tmp_path, "laptop", "phone",
                                                    "tablet")
    offline = edit(tablet, space, "x")  # the tablet never pushes it
    assert laptop.engine.mesh.accept(space, [offline]).applied == 1
    await laptop.revoke(tablet.device_id, "stolen")
    seq = decode_envelope(offline).header.seq
    assert laptop.registry().device(tablet.device_id).cutoff[space] == seq  # type: ignore[union-attr]
    for dev in (laptop, phone, laptop, phone):
        await dev.sync()
    phone.engine.mesh.accept(space, [offline])  # the phone hears of it from a peer, later
    assert text(laptop, space) == text(phone, space) == "x"
    late = await relay.add(laptop, tmp_path / "late", "late")
    await late.sync()
    assert text(late, space) == "x"
    await close(laptop, phone, tablet, late)


async def test_an_approved_revocation_keeps_the_enacting_devices_peer_only_ops(
        relay: InProcessRelay, tmp_path: Path) -> None:
    # Under an approval policy the cutoff is fixed when the proposal is enacted,
    # by whichever device enacts it: that device carries what it applied first.
    (laptop, phone, tablet), space = await devices(relay, tmp_path, "laptop", "phone",
                                                    "tablet")
    assert (await laptop.set_policy({"approvals": 2})).done  # not yet governed: direct
    for dev in (phone, tablet):
        await dev.sync()
    change = await laptop.revoke(tablet.device_id, "stolen")
    assert not change.done and change.pending is not None
    offline = edit(tablet, space, "y")  # made after the proposal, reaches the phone only
    assert phone.engine.mesh.accept(space, [offline]).applied == 1
    await phone.refresh_registry()
    assert (await phone.governance.approve(change.pending.proposal)).done
    assert not phone.registry().is_active(tablet.device_id)
    for dev in (laptop, phone, laptop):
        await dev.sync()
    assert text(laptop, space) == text(phone, space) == "y"
    await close(laptop, phone, tablet)


async def test_a_revocation_by_a_device_that_missed_a_peer_only_op_leaves_every_device_equal(
        relay: InProcessRelay, tmp_path: Path) -> None:
    # Only the phone applied the tablet's op (from a peer); the laptop, which never
    # saw it, revokes the tablet. The op is beyond the cutoff, refused everywhere
    # else, so the phone rebuilds the space from the log without it, says so, and
    # keeps what it learnt from peers that is still valid (the laptop's "z").
    (laptop, phone, tablet), space = await devices(relay, tmp_path, "laptop", "phone",
                                                    "tablet")
    offline = edit(tablet, space, "x")  # reaches the phone only, never the log
    assert phone.engine.mesh.accept(space, [offline]).applied == 1
    await laptop.revoke(tablet.device_id, "stolen")
    edit(laptop, space, "z")  # not pushed; the phone catches up with the laptop
    assert exchange(phone, laptop, space).applied == 1
    assert text(phone, space) in ("xz", "zx")
    report = await phone.sync()
    assert report.rederived == [space]
    assert [c for c, m in report.alerts if "taken back" in m] == [Code.REVOKED.value]
    assert text(phone, space) == "z"
    for dev in (laptop, phone, laptop):
        await dev.sync()
    assert text(laptop, space) == text(phone, space) == "z"
    assert (await phone.sync()).rederived == []  # once
    phone.engine.mesh.accept(space, [offline])  # heard again from a peer: refused
    assert text(phone, space) == "z"
    await close(laptop, phone, tablet)


async def test_a_rebuild_cut_short_by_the_network_resumes_at_the_next_sync(
        relay: InProcessRelay, tmp_path: Path) -> None:
    (laptop, phone, tablet), space = await devices(relay, tmp_path, "laptop", "phone",
                                                    "tablet")
    offline = edit(tablet, space, "x")
    assert phone.engine.mesh.accept(space, [offline]).applied == 1
    await laptop.revoke(tablet.device_id, "stolen")
    edit(laptop, space, "z")  # not pushed; the phone catches up with the laptop
    assert exchange(phone, laptop, space).applied == 1
    await phone.close()

    def pulls(request: httpx.Request) -> bool:
        return request.method == "GET" and request.url.path.endswith("/ops")
    home = tmp_path / "phone"
    phone = Device.open(home, passphrase=passphrase,
                        transport=Network(relay.transport(), drop=pulls), clock=relay.clock)
    with pytest.raises(UnavailableError):
        await phone.sync()  # the state was dropped; the pull that rebuilds it never arrives
    assert text(phone, space) == ""
    assert phone.store.keys("prejudge") == [space]
    assert [k[16:48] for k in phone.store.keys("pop", space)] == [laptop.device_id]
    await phone.close()
    phone = Device.open(home, passphrase=passphrase, transport=relay.transport(),
                        clock=relay.clock)
    report = await phone.sync()
    assert report.rederived == []  # (dropped last time: this pull rebuilds it)
    assert text(phone, space) == "z"  # the laptop's op, learnt from a peer, was kept
    assert phone.store.keys("prejudge") == []
    await laptop.sync()
    assert text(laptop, space) == "z"
    await close(laptop, phone, tablet)


class Network(httpx.AsyncBaseTransport):
    """A device's network to the relay that drops the requests ``drop`` picks."""

    def __init__(self, inner: httpx.AsyncBaseTransport,
                 drop: Callable[[httpx.Request], bool]) -> None:
        self.inner, self.drop = inner, drop

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.drop(request):
            raise httpx.ConnectError("network down", request=request)
        return await self.inner.handle_async_request(request)


async def test_forged_registry_entries_are_refused(relay: InProcessRelay,
                                                   tmp_path: Path) -> None:
    (laptop, phone, tablet), space = await devices(relay, tmp_path, "laptop", "phone",
                                                    "tablet")
    outsider, _ = await relay.new_account(tmp_path / "outsider", "outsider")
    await laptop.revoke(tablet.device_id, "stolen")
    req = phone.engine.mesh.request(space)
    genuine = laptop.engine.mesh.respond(req, phone.device_id).registry
    assert genuine
    before = phone.registry()
    first = req.registry_seq + 1
    flipped = genuine[0][:-1] + bytes([genuine[0][-1] ^ 1])
    foreign = tuple(v for _, v in outsider.store.scan("reg"))[1:] or tuple(
        v for _, v in outsider.store.scan("reg"))
    for forged in ((flipped, *genuine[1:]), foreign, (genuine[0][::-1],)):
        with pytest.raises(SddsfError):
            phone.engine.mesh.accept_registry(first, forged)
        assert phone.registry() == before and phone.store.count("reg") == before.seq + 1
    assert phone.registry().is_active(tablet.device_id)
    # The genuine entries apply (so the refusals above were the forgeries').
    assert phone.engine.mesh.accept_registry(first, genuine)
    assert not phone.registry().is_active(tablet.device_id)
    await close(laptop, phone, tablet, outsider)


async def test_forged_or_mismatched_key_packages_are_refused(relay: InProcessRelay,
                                                             tmp_path: Path) -> None:
    (laptop, phone), space = await devices(relay, tmp_path, "laptop", "phone")
    diary = await laptop.create_space("diary")
    await laptop.sync()
    await phone.sync()
    mesh = phone.engine.mesh
    newest = max(mesh.keyring.keys_cached(space))
    epoch = await laptop.rotate(space)
    while await laptop.rotate(diary) <= epoch:
        pass  # the diary's packages have epochs the notes' chain would take next
    stored = list(phone.store.scan("kp", space))
    assert epoch > newest
    req = mesh.request(space)
    genuine = laptop.engine.mesh.respond(req, phone.device_id).packages
    other = laptop.engine.mesh.respond(mesh.request(diary), phone.device_id).packages
    assert genuine and other
    flipped = genuine[-1][:-1] + bytes([genuine[-1][-1] ^ 1])
    for forged in ((flipped,), other, (*genuine[:-1], flipped)):
        with pytest.raises(SddsfError):
            mesh.accept_packages(space, forged)
        assert list(phone.store.scan("kp", space)) == stored
        assert max(mesh.keyring.keys_cached(space)) == newest
    assert mesh.accept_packages(space, genuine)  # the path works for genuine ones
    assert max(mesh.keyring.keys_cached(space)) == epoch
    await close(laptop, phone)


async def test_catch_up_is_served_only_to_devices_that_may_read(relay: InProcessRelay,
                                                                tmp_path: Path) -> None:
    (laptop, phone, tablet), space = await devices(relay, tmp_path, "laptop", "phone",
                                                    "tablet")
    outsider, _ = await relay.new_account(tmp_path / "outsider", "outsider")
    edit(laptop, space, "private")
    mesh = laptop.engine.mesh
    req = phone.engine.mesh.request(space)
    assert mesh.respond(req, phone.device_id).ops
    # A space this device does not sync (made up, or another account's).
    own = await outsider.create_space("theirs")
    for space_id in (random_bytes(16), own):
        with pytest.raises(SddsfError) as info:
            mesh.respond(dataclasses.replace(req, space_id=space_id), phone.device_id)
        assert info.value.code is Code.NOT_AUTHORIZED
    # A device of another account, even claiming this account in its request.
    with pytest.raises(SddsfError) as info:
        mesh.respond(req, outsider.device_id)
    assert info.value.code is Code.NOT_AUTHORIZED
    # A revoked device of the account.
    await laptop.revoke(tablet.device_id, "lost")
    with pytest.raises(SddsfError) as info:
        mesh.respond(req, tablet.device_id)
    assert info.value.code is Code.NOT_AUTHORIZED
    await close(laptop, phone, tablet, outsider)



# ============================================================ over the wire
# Real libp2p on loopback. The device under attack runs PeerSync; the attacker
# is a bare PeerNode holding a real, active device's key (so it is admitted)
# and sends whatever it likes. No periodic catch-up: every exchange below is
# one the test caused.
class Attacker:
    """An authorised peer running its own code: it publishes any bytes on a
    space's topic (named with the epoch key it holds) and answers catch-up
    requests with ``answer(request)``, by default an honest empty answer."""

    def __init__(self, keys_of: Device, space: bytes) -> None:
        from sddsf.p2p.node import PeerNode

        self.device_id = keys_of.device_id
        self.requests: list[p2p.CatchUpRequest] = []
        self.answer: Callable[[p2p.CatchUpRequest], p2p.CatchUpResponse] = (
            lambda _r: p2p.CatchUpResponse((), False))
        keys = keys_of.engine.keyring.keys_cached(space)
        self.topic = p2p.space_topic(space, max(keys), keys[max(keys)])
        self.node = PeerNode(keys_of.keys.signing.seed, listen=("/ip4/127.0.0.1/tcp/0",),
                             mdns=False, authorize=lambda _d: True,
                             on_message=lambda *_a: None, on_request=self._request)

    async def _request(self, _sender: bytes, data: bytes) -> bytes:
        req = p2p.decode_request(data)
        self.requests.append(req)
        return p2p.encode_response(self.answer(req))

    async def start(self, victim_addr: str) -> None:
        await self.node.start()
        await self.node.subscribe(self.topic)
        await self.node.dial(victim_addr)

    async def publish(self, data: bytes) -> None:
        await self.node.publish(self.topic, data)

    async def publish_until(self, data: bytes, done: Callable[[], bool],
                            timeout: float = 20.0) -> None:
        """Publish ``data`` until ``done()`` (a new peer joins the topic's mesh
        at the next heartbeat: the first messages may reach nobody)."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError("the victim never reacted")
            await self.publish(data)
            await asyncio.sleep(0.2)


def gossip_op(raw: bytes) -> bytes:
    return p2p.encode_gossip(p2p.Gossip(p2p.GossipKind.OP, (raw,)))


async def serve(dev: Device) -> PeerSync:
    """The device's PeerSync on loopback, no mDNS, no periodic catch-up."""
    from sddsf.p2p.sync import PeerSync, PeerSyncSettings

    peer = PeerSync(dev, PeerSyncSettings(listen=("/ip4/127.0.0.1/tcp/0",), mdns=False,
                                          poll_s=0.1, catch_up_s=3600.0))
    await peer.start()
    return peer


def connected(victim: PeerSync, device_id: bytes) -> bool:
    return any(p.connected and p.device_id == device_id
               for p in victim.peers())


@needs_libp2p
async def test_wire_replays_are_held_and_a_forger_is_disconnected(relay: InProcessRelay,
                                                                  tmp_path: Path) -> None:
    (laptop, phone, tablet), space = await devices(relay, tmp_path, "laptop", "phone",
                                                    "tablet")
    diary = await laptop.create_space("diary")
    for dev in (laptop, tablet):
        await dev.sync()
    held = edit(tablet, space, "held ")
    assert laptop.engine.mesh.accept(space, [held]).applied == 1
    elsewhere = edit(tablet, diary, "diary")
    fresh = edit(tablet, space, "fresh")
    forged = held[:-64] + reseal(tablet, fresh)[-64:]  # a real signature, not over this op
    victim = await serve(laptop)
    attacker = Attacker(phone, space)
    try:
        await attacker.start(victim.addrs[0])
        stats = victim.stats
        # A replay: held, not applied again.
        await attacker.publish_until(gossip_op(held), lambda: stats.known >= 1)
        assert stats.applied == 0 and text(laptop, space) == "held "
        # A genuine op of another space on this space's topic: refused, and
        # not a forgery (the peer stays connected).
        await attacker.publish_until(gossip_op(elsewhere), lambda: Code.WRONG_CONTEXT.value
                                     in codes(stats.refused))
        assert text(laptop, diary) == "" and connected(victim, phone.device_id)
        # A forged signature: refused, and the sender is cut off.
        await attacker.publish_until(gossip_op(forged), lambda: Code.SIG_INVALID.value
                                     in codes(stats.refused))
        await until(lambda: not connected(victim, phone.device_id))
        assert text(laptop, space) == "held "
        # It stays out: dialling again and publishing a genuine op gets nothing in.
        with contextlib.suppress(SddsfError):
            await attacker.node.dial(victim.addrs[0])
        for _ in range(8):
            await attacker.publish(gossip_op(fresh))
            await asyncio.sleep(0.2)
        assert text(laptop, space) == "held " and not connected(victim, phone.device_id)
    finally:
        await attacker.node.stop()
        await victim.stop()
    await close(laptop, phone, tablet)


@needs_libp2p
async def test_wire_garbage_gossip_does_not_stop_the_service(relay: InProcessRelay,
                                                            tmp_path: Path) -> None:
    (laptop, phone, tablet), space = await devices(relay, tmp_path, "laptop", "phone",
                                                    "tablet")
    genuine = edit(tablet, space, "still works")
    victim = await serve(laptop)
    attacker = Attacker(phone, space)
    garbage = [b"", b"\xff", random_bytes(200), encode_raw([2, 0, 0, [b"x"]]),
               encode_raw([1, 0, 0, []]), encode_raw([1, 7, 0, [b"x"]]),
               encode_raw({"v": 1}), gossip_op(b"\x84\x01not an op"),
               gossip_op(random_bytes(300)),
               p2p.encode_gossip(p2p.Gossip(p2p.GossipKind.REGISTRY, (b"\x00junk",), 1)),
               p2p.encode_gossip(p2p.Gossip(p2p.GossipKind.REGISTRY, (random_bytes(64),),
                                            2**63))]
    try:
        await attacker.start(victim.addrs[0])
        stats = victim.stats
        # Wait until the attacker's messages reach the victim (a replay of
        # nothing it holds would apply: use garbage it refuses visibly).
        await attacker.publish_until(gossip_op(b"\x84\x01not an op"),
                                     lambda: len(stats.refused) >= 1)
        for data in garbage:
            await attacker.publish(data)
        # Then a genuine op: the service is still judging what arrives.
        await attacker.publish_until(gossip_op(genuine),
                                     lambda: text(laptop, space) == "still works")
        assert stats.applied == 1 and connected(victim, phone.device_id)
    finally:
        await attacker.node.stop()
        await victim.stop()
    await close(laptop, phone, tablet)


@needs_libp2p
async def test_wire_catch_up_requests_are_judged(relay: InProcessRelay, tmp_path: Path) -> None:
    (laptop, phone), space = await devices(relay, tmp_path, "laptop", "phone")
    outsider, _ = await relay.new_account(tmp_path / "outsider", "outsider")
    edit(laptop, space, "private")
    victim = await serve(laptop)
    attacker = Attacker(phone, space)
    stranger = Attacker(outsider, await outsider.create_space("theirs"))
    try:
        await attacker.start(victim.addrs[0])
        ask = phone.engine.mesh.request(space)
        node = attacker.node
        # Garbage and requests out of bounds: refused, and the service answers on.
        for data in (b"\x00", random_bytes(100), encode_raw([1, space, [], ask.account_id, 0,
                                                             0, 0])):
            with pytest.raises(SddsfError) as info:
                await node.request(laptop.device_id, data)
            assert info.value.code in {Code.MALFORMED, Code.TOO_LARGE}
        # A space the asker may not read (not synced here, or another account's).
        for space_id in (random_bytes(16), outsider.spaces()[0][0]):
            with pytest.raises(SddsfError) as info:
                await node.request(laptop.device_id, p2p.encode_request(
                    dataclasses.replace(ask, space_id=space_id)))
            assert info.value.code is Code.NOT_AUTHORIZED
        answer = p2p.decode_response(await node.request(laptop.device_id,
                                                        p2p.encode_request(ask)))
        assert len(answer.ops) == 1  # the device still serves its own peers
        # A device of another account never gets a connection, let alone an answer.
        with pytest.raises(SddsfError):
            await stranger.start(victim.addrs[0])
        with pytest.raises(SddsfError):
            await stranger.node.request(laptop.device_id, p2p.encode_request(ask))
        assert not connected(victim, outsider.device_id)
    finally:
        for n in (attacker.node, stranger.node):
            await n.stop()
        await victim.stop()
    await close(laptop, phone, outsider)


@needs_libp2p
async def test_wire_forged_registry_entries_are_refused(relay: InProcessRelay, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    (laptop, phone, tablet), space = await devices(relay, tmp_path, "laptop", "phone",
                                                    "tablet")
    victim = await serve(phone)
    attacker = Attacker(laptop, space)  # its topic: the epoch the phone holds
    before = phone.registry()
    await laptop.revoke(tablet.device_id, "stolen")  # the phone never syncs with the relay
    genuine = tuple(v for _, v in laptop.store.scan("reg", start=(before.seq + 1).to_bytes(
        8, "big")))
    assert genuine
    flipped = (genuine[0][:-1] + bytes([genuine[0][-1] ^ 1]), *genuine[1:])

    def refusals() -> int:
        return sum("registry entries from a peer refused" in r.getMessage()
                   for r in caplog.records)

    try:
        with caplog.at_level(logging.WARNING, logger="sddsf.p2p"):
            await attacker.start(victim.addrs[0])
            # Announced on the topic.
            await attacker.publish_until(p2p.encode_gossip(p2p.Gossip(
                p2p.GossipKind.REGISTRY, flipped, before.seq + 1)), lambda: refusals() >= 1)
            assert phone.registry() == before
            # In a catch-up answer.
            attacker.answer = lambda _r: p2p.CatchUpResponse((), False, flipped)
            seen = refusals()
            await victim.catch_up(laptop.device_id)
            assert refusals() > seen and phone.registry() == before
            assert phone.registry().is_active(tablet.device_id)
            # The genuine entries, the same way, apply (the path works).
            attacker.answer = lambda _r: p2p.CatchUpResponse((), False, genuine)
            await victim.catch_up(laptop.device_id)
            assert not phone.registry().is_active(tablet.device_id)
    finally:
        await attacker.node.stop()
        await victim.stop()
    await close(laptop, phone, tablet)


@needs_libp2p
async def test_wire_forged_key_packages_are_refused(relay: InProcessRelay, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    (laptop, phone), space = await devices(relay, tmp_path, "laptop", "phone")
    victim = await serve(phone)
    attacker = Attacker(laptop, space)
    mesh = phone.engine.mesh
    newest = max(mesh.keyring.keys_cached(space))
    epoch = await laptop.rotate(space)
    genuine = laptop.engine.mesh.respond(mesh.request(space), phone.device_id).packages
    stored = list(phone.store.scan("kp", space))
    flipped = genuine[-1][:-1] + bytes([genuine[-1][-1] ^ 1])
    try:
        with caplog.at_level(logging.WARNING, logger="sddsf.p2p"):
            await attacker.start(victim.addrs[0])
            await until(lambda: bool(attacker.requests))  # the catch-up on connecting
            attacker.answer = lambda _r: p2p.CatchUpResponse((), False, (), (flipped,))
            await victim.catch_up(laptop.device_id)
            assert any("key packages from peer" in r.getMessage() for r in caplog.records)
            assert list(phone.store.scan("kp", space)) == stored
            assert max(mesh.keyring.keys_cached(space)) == newest
            attacker.answer = lambda _r: p2p.CatchUpResponse((), False, (), genuine)
            await victim.catch_up(laptop.device_id)
            assert max(mesh.keyring.keys_cached(space)) == epoch
    finally:
        await attacker.node.stop()
        await victim.stop()
    await close(laptop, phone)


@needs_libp2p
async def test_wire_replayed_catch_up_answers_end_the_exchange(relay: InProcessRelay,
                                                               tmp_path: Path) -> None:
    (laptop, phone), space = await devices(relay, tmp_path, "laptop", "phone")
    held = [edit(phone, space, f"{i} ") for i in range(3)]
    assert laptop.engine.mesh.accept(space, held).applied == 3
    victim = await serve(laptop)
    attacker = Attacker(phone, space)
    try:
        await attacker.start(victim.addrs[0])
        await until(lambda: bool(attacker.requests))  # the catch-up on connecting
        await asyncio.sleep(0.3)
        # Every answer: ops the device holds, and "there is more".
        attacker.answer = lambda _r: p2p.CatchUpResponse(tuple(held), True)
        attacker.requests.clear()
        started = time.monotonic()
        applied = await victim.catch_up(phone.device_id)
        assert applied == 0 and text(laptop, space) == "0 1 2 "
        # One more question at most, not a thousand.
        assert len(attacker.requests) <= 2, len(attacker.requests)
        assert time.monotonic() - started < 5
    finally:
        await attacker.node.stop()
        await victim.stop()
    await close(laptop, phone)
