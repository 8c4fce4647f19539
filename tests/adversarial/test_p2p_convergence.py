"""The convergence checkers (sddsf.testing.checkers) over peer-to-peer and hybrid
histories (protocol.md 23; THREATS "cross-cutting checkers").

Three devices of one account share a space on a real relay process (SQLite, on
loopback). Then:

1. **Peer to peer.** Each device runs PeerSync on loopback and nobody talks to
   the relay. Seeded random edits on every device (a key only that edit
   writes, a key every device overwrites, inserts into a shared text), while
   one device is stopped (its node and its home closed) and later reopened
   from its home and restarted. Once the peers settle, the final decrypted
   states must be equal (``strong_convergence``) and hold every edit.
2. **Hybrid.** The peers keep running, more random edits, and devices sync
   with the relay now and then meanwhile (each carries the ops it learnt from
   peers, protocol 23.7). At the end every device syncs with the relay until
   nothing is pending, and every checker runs on the recorded history and the
   relay's database: no lost ack, no duplicates, gap-free offsets, monotonic
   delivery, consistent checkpoints, chains that verify, strong convergence
   and fsck. Every op that went device to device reaches the log once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pycrdt
import pytest
from _procs import RELAY_LIMITS, permissive_controller
from clusterkit import LONG
from livekit import RelayProcess, Relays, write_key_file

from sddsf.client.device import Device
from sddsf.relay.fsck import read_logs
from sddsf.testing import checkers as ck

if TYPE_CHECKING:
    from sddsf.p2p.sync import PeerSync

if os.environ.get("SDDSF_REQUIRE_P2P") != "1" and importlib.util.find_spec("libp2p") is None:
    pytest.skip("peer-to-peer sync needs the p2p extra (libp2p)", allow_module_level=True)

NAMES = ("d0", "d1", "d2")
#: Edits per phase (more under SDDSF_LONG_TESTS=1).
STEPS = 60 if LONG else 24
SEEDS = (11, 12, 13, 14) if LONG else (11,)
CONVERGE_S = 30.0


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    """A real relay process on SQLite, limits lifted (three devices syncing from
    one address is this test's load, not an attack)."""
    relays = Relays(tmp_path)
    env = {"SDDSF_RELAY_KEY_FILE": str(write_key_file(tmp_path / "relay.key")),
           **RELAY_LIMITS, **permissive_controller(tmp_path)}
    try:
        yield relays.start("--db", f"sqlite:///{tmp_path / 'relay.db'}", env=env)
    finally:
        relays.stop_all()


def state_of(dev: Device, space: bytes) -> object:
    """What must converge: the decrypted key-value document and text document."""
    kv = dict(dev.doc(space, "kv").get("kv", type=pycrdt.Map))
    return {"kv": kv, "text": str(dev.doc(space, "text").get("t", type=pycrdt.Text))}


@dataclass
class Mesh:
    """Three device homes, their PeerSync services, and what was written."""

    work: Path
    relay_url: str
    space: bytes
    history: ck.History
    devices: dict[str, Device]
    peers: dict[str, PeerSync | None] = field(default_factory=dict)
    written: dict[str, str] = field(default_factory=dict)  # unique key -> value
    tokens: set[str] = field(default_factory=set)  # text inserts
    counter: int = 0

    def open(self, name: str) -> Device:
        dev = Device.open(self.work / name, passphrase=None,
                          transport=httpx.AsyncHTTPTransport())
        ck.record_device(self.history.add, name, dev)
        self.devices[name] = dev
        return dev

    def running(self) -> list[str]:
        return [n for n, p in self.peers.items() if p is not None]

    async def start(self, name: str) -> None:
        from sddsf.p2p.sync import PeerSync, PeerSyncSettings

        others = [a for n in self.running() if n != name
                  for a in self.peers[n].addrs[:1]]  # type: ignore[union-attr]
        peer = PeerSync(self.devices[name], PeerSyncSettings(
            listen=("/ip4/127.0.0.1/tcp/0",), mdns=False, poll_s=0.1, catch_up_s=1.0,
            bootstrap=tuple(others)))
        await peer.start()
        self.peers[name] = peer

    async def stop(self, name: str, *, close: bool = False) -> None:
        peer = self.peers[name]
        if peer is not None:
            await peer.stop()
        self.peers[name] = None
        if close:
            await self.devices[name].close()

    def edit(self, rng: random.Random, name: str) -> None:
        """One random edit on a running device, sealed and announced at once."""
        dev = self.devices[name]
        self.counter += 1
        tag = f"{name}:{self.counter}"
        kind = rng.choice(("unique", "shared", "text"))
        if kind == "unique":
            dev.doc(self.space, "kv").get("kv", type=pycrdt.Map)[tag] = tag
            self.written[tag] = tag
        elif kind == "shared":
            dev.doc(self.space, "kv").get("kv", type=pycrdt.Map)["shared"] = tag
        else:
            t = dev.doc(self.space, "text").get("t", type=pycrdt.Text)
            # Between two inserts, never inside one (so each stays readable whole).
            at = [0, *(i + 1 for i, c in enumerate(str(t)) if c == ">")]
            t.insert(rng.choice(at), f"<{tag}>")
            self.tokens.add(f"<{tag}>")
        dev.flush()
        peer = self.peers[name]
        if peer is not None:
            peer.changed()

    def states(self) -> dict[str, object]:
        return {n: state_of(d, self.space) for n, d in self.devices.items()}

    def lost(self, state: Any) -> list[str]:
        """Edits the state lacks (every one of them was flushed: none may be lost)."""
        missing = [k for k, v in self.written.items() if state["kv"].get(k) != v]
        return missing + [t for t in self.tokens if t not in state["text"]]


async def setup(relay: RelayProcess, work: Path) -> Mesh:
    history = ck.History()
    first, _ = await Device.create_account(work / NAMES[0], relay.base_url, NAMES[0],
                                           passphrase=None, insecure_plaintext=True,
                                           transport=httpx.AsyncHTTPTransport())
    ck.record_device(history.add, NAMES[0], first)
    space = await first.create_space("notes")
    await first.sync()  # the space's first op, before the additions open new epochs
    mesh = Mesh(work, relay.base_url, space, history, {NAMES[0]: first})
    for name in NAMES[1:]:
        dev = await Device.add_local(first, work / name, name, passphrase=None,
                                     insecure_plaintext=True,
                                     transport=httpx.AsyncHTTPTransport())
        ck.record_device(history.add, name, dev)
        mesh.devices[name] = dev
    for _ in range(2):
        for dev in mesh.devices.values():
            await dev.sync()  # everyone holds the registry and the newest key
    mesh.peers = dict.fromkeys(NAMES)
    for name in NAMES:
        await mesh.start(name)
    return mesh


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.1)


async def log_size(db: str) -> int:
    """Entries in the relay's logs (read from its database)."""
    return sum(len(log.entries) for log in await read_logs(db))


def same(states: dict[str, object]) -> bool:
    values = list(states.values())
    return all(v == values[0] for v in values)


async def peer_to_peer_phase(mesh: Mesh, rng: random.Random) -> None:
    """Random edits over peers only; one device stopped, then restarted, mid-way."""
    away = rng.choice(NAMES)
    for step in range(STEPS):
        if step == STEPS // 3:
            await mesh.stop(away, close=True)  # its node and its home
        if step == 2 * STEPS // 3:
            mesh.open(away)
            await mesh.start(away)
        mesh.edit(rng, rng.choice(mesh.running()))
        await asyncio.sleep(rng.uniform(0.0, 0.08))
    await until(lambda: same(mesh.states()), CONVERGE_S, "the peers converge")


async def hybrid_phase(mesh: Mesh, rng: random.Random) -> list[tuple[str, str]]:
    """More random edits with the peers running, while devices sync with the relay."""
    rejected: list[tuple[str, str]] = []
    for _ in range(STEPS):
        name = rng.choice(NAMES)
        if rng.random() < 0.3:
            rejected += (await mesh.devices[name].sync()).rejected
        else:
            mesh.edit(rng, name)
        await asyncio.sleep(rng.uniform(0.0, 0.05))
    for name in NAMES:
        await mesh.stop(name)
    return rejected


async def settle_with_relay(mesh: Mesh) -> list[tuple[str, str]]:
    """Every device syncs until nothing is pending anywhere (each carries what it
    learnt from peers), then once more so everyone pulled everything."""
    rejected: list[tuple[str, str]] = []
    for _ in range(4):
        for dev in mesh.devices.values():
            rejected += (await dev.sync()).rejected
        if all(d.pending_count() == 0 for d in mesh.devices.values()):
            break
    for dev in mesh.devices.values():
        rejected += (await dev.sync()).rejected
    return rejected


@pytest.mark.parametrize("seed", SEEDS)
async def test_peer_to_peer_and_hybrid_histories_pass_the_checkers(
        relay: RelayProcess, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    mesh = await setup(relay, tmp_path)
    try:
        db = f"sqlite:///{tmp_path / 'relay.db'}"
        logged = await log_size(db)
        await peer_to_peer_phase(mesh, rng)
        # (a) Peer to peer: equal final states holding every edit, and none of
        # it went through the relay (every device still has its edits pending).
        p2p_history = ck.History()
        for name, dev in mesh.devices.items():
            p2p_history.states.setdefault(name, {})[mesh.space] = state_of(dev, mesh.space)
        assert ck.strong_convergence(p2p_history) == []
        converged = next(iter(mesh.states().values()))
        assert mesh.lost(converged) == []
        assert await log_size(db) == logged
        assert sum(d.pending_count() for d in mesh.devices.values()) > 0
        # (b) Hybrid, then everyone on the relay: every checker on its database.
        rejected = await hybrid_phase(mesh, rng)
        rejected += await settle_with_relay(mesh)
    finally:
        for name in NAMES:
            if mesh.peers.get(name) is not None:
                await mesh.stop(name)
    assert rejected == []
    for name, dev in mesh.devices.items():
        assert dev.pending_count() == 0, name
        ck.record_final(mesh.history, name, dev, state_of)
        assert dev.store.count("pop", mesh.space) == 0, f"{name} still carries ops"
    violations = await ck.check_relay(mesh.history, db)
    assert violations == [], "\n".join(map(str, violations))
    final = mesh.history.states[NAMES[0]][mesh.space]
    assert mesh.lost(final) == []
    # The checkers saw the relay's side of the history (acks and heads), and it
    # is a hybrid one: devices uploaded ops of other devices learnt from peers.
    assert mesh.history.acks and mesh.history.heads
    ids = {name: dev.device_id for name, dev in mesh.devices.items()}
    assert any(ids[a.client] != a.device for a in mesh.history.acks)
    assert len({(a.device, a.device_seq) for a in mesh.history.acks}) == max(
        d.items[-1][0] + 1 for d in mesh.history.deliveries if d.items)
    for dev in mesh.devices.values():
        await dev.close()
