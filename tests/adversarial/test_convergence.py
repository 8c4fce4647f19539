"""Strong convergence under faults: a Hypothesis state machine (THREATS #22, #23,
and the "strong convergence" and "no lost ACK" checkers).

Three devices of one account share a space on an in-process relay. Each device
talks to the relay through its own faulty network (:class:`FaultyNet`) in front
of the malicious-relay harness, so the machine can interleave:

* random edits: a key only this edit writes (it must survive), a shared key
  every device overwrites (it must converge), inserts into a shared text;
* flushes (the edit becomes a pending op, persisted before it is sent), syncs
  of one device or of all;
* partitions (the request never leaves), lost responses (the relay did the
  work, the device never hears of it: an ambiguous outcome), duplicated
  requests (the relay sees each request twice);
* lying delivery to one device: ops dropped, reordered, duplicated,
  re-delivered (overlap) or rewritten in what the relay serves it;
* restarts: a clean close and reopen from the home directory, or a crash that
  loses only the edits not yet flushed.

Invariants after every step: no device ever holds a log that is not a prefix
of the relay's genuine log (a lie is refused, never applied), and every op the
relay acknowledged to a device is in the log at the acknowledged offset. At the
end the network heals, every device syncs, and all devices hold identical
decrypted documents, identical verified tree heads equal to the relay's log,
no pending ops, and every edit that was flushed (or synced) before a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pycrdt
from clusterkit import LONG
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
)
from relaykit import Clock, make_app

from sddsf.client.device import Device
from sddsf.errors import (
    AuthenticationError,
    Code,
    ProofError,
    SddsfError,
    UnavailableError,
)
from sddsf.protocol import merkle
from sddsf.protocol.treehead import decode_tree_head
from sddsf.relay.storage import open_storage
from sddsf.testing.malicious_relay import (
    Attack,
    Drop,
    Duplicate,
    MaliciousRelay,
    Overlap,
    Reorder,
    Rewrite,
)

_T = TypeVar("_T")
DEVICES = 3
NETWORK_MODES = ("ok", "partitioned", "lose_responses", "duplicate", "flaky")


class FaultyNet(httpx.AsyncBaseTransport):
    """One device's network to the relay, with a switchable fault."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.mode = "ok"
        self._count = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._count += 1
        mode = self.mode
        if mode == "flaky":  # every other response is lost
            mode = "lose_responses" if self._count % 2 else "ok"
        if mode == "partitioned":
            raise httpx.ConnectError("partitioned", request=request)
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        if mode == "lose_responses":
            raise httpx.ReadError("connection lost before the response", request=request)
        if mode == "duplicate":  # the network delivers the request a second time
            again = httpx.Request(request.method, request.url, headers=request.headers,
                                  content=request.content)
            await (await self.inner.handle_async_request(again)).aread()
        return httpx.Response(response.status_code, headers=response.headers, content=content)


class Convergence(RuleBasedStateMachine):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="sddsf-conv-"))
        self.counter = 0
        self.buffered: list[set[str]] = [set() for _ in range(DEVICES)]
        self.durable: dict[str, str] = {}  # unique key -> value, flushed or synced
        self.tokens_buffered: list[set[str]] = [set() for _ in range(DEVICES)]
        self.tokens_durable: set[str] = set()
        self.run(self._setup())

    # ------------------------------------------------------------ plumbing
    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(coro)

    async def _setup(self) -> None:
        self.storage = open_storage(f"sqlite:///{self.tmp / 'relay.db'}")
        await self.storage.open()
        self.clock = Clock(time.time_ns() // 1_000_000)
        # Rate limits lifted: three devices syncing many times a second from one
        # address is this test's load, not an attack.
        app = make_app(self.storage, self.clock, **{
            f"rate_{kind}_{unit}": 1e9 for kind in ("ip", "device", "account", "ops")
            for unit in ("per_s", "burst")})
        self.harness = MaliciousRelay(httpx.ASGITransport(app=app))
        self.nets = [FaultyNet(self.harness) for _ in range(DEVICES)]
        first, _ = await Device.create_account(self.home(0), "http://relay.test", "d0",
                                               passphrase=None, insecure_plaintext=True,
                                               transport=self.nets[0], clock=self.clock)
        self.space = await first.create_space("notes")
        self.devices = [first]
        # No sync before the additions: the space's first op waits in the queue
        # through two new epochs and is refused stale_epoch at the first push;
        # the device must seal it again, not lose it and every later edit (a
        # bug this machine found; test_threat_14_15_revocation.py keeps it).
        for i in range(1, DEVICES):
            self.devices.append(await Device.add_local(
                first, self.home(i), f"d{i}", passphrase=None, insecure_plaintext=True,
                transport=self.nets[i], clock=self.clock))
        for device in self.devices:
            await device.sync()

    def home(self, i: int) -> Path:
        return self.tmp / f"home{i}"

    def kv(self, i: int) -> pycrdt.Map[Any]:
        return self.devices[i].doc(self.space, "kv").get("kv", type=pycrdt.Map)

    def text(self, i: int) -> pycrdt.Text:
        return self.devices[i].doc(self.space, "text").get("t", type=pycrdt.Text)

    def persisted(self, i: int) -> None:
        """Device ``i`` flushed: its buffered edits are now durable."""
        for key in self.buffered[i]:
            self.durable[key] = key
        self.tokens_durable |= self.tokens_buffered[i]
        self.buffered[i].clear()
        self.tokens_buffered[i].clear()

    async def genuine_leaves(self) -> list[bytes]:
        ops = await self.storage.read_ops(self.space, -1, 100_000)
        return [op.leaf_hash for op in ops]

    # --------------------------------------------------------------- rules
    @rule(i=st.integers(0, DEVICES - 1), kind=st.sampled_from(["unique", "shared", "text"]),
          at_end=st.booleans(), flush=st.booleans())
    def edit(self, i: int, kind: str, at_end: bool, flush: bool) -> None:
        """An edit; with ``flush`` it becomes a pending op (persisted) at once."""
        self.counter += 1
        tag = f"d{i}-{self.counter}"
        if kind == "unique":
            self.kv(i)[tag] = tag
            self.buffered[i].add(tag)
        elif kind == "shared":
            self.kv(i)["shared"] = tag
        else:
            text = self.text(i)
            text.insert(len(text) if at_end else 0, f"<{tag}>")
            self.tokens_buffered[i].add(f"<{tag}>")
        if flush:
            self.devices[i].flush()
            self.persisted(i)

    @rule(i=st.integers(0, DEVICES - 1))
    def sync(self, i: int) -> None:
        self.persisted(i)  # sync flushes before any network traffic
        try:
            report = self.run(self.devices[i].sync())
            event(f"sync ok ({'pushed' if report.pushed else 'nothing pushed'})")
        except (UnavailableError, ProofError) as exc:
            event(f"sync refused: {exc.code.value}")  # a fault or a lie: retried later
        except AuthenticationError as exc:
            # A duplicated challenge request replaces the challenge the device
            # answers (the relay keeps one per device): a transient, typed
            # refusal that the next sync gets past. Only the duplicating
            # networks may cause it.
            if exc.code is not Code.UNAUTHENTICATED or self.nets[i].mode not in (
                    "duplicate", "flaky"):
                raise AssertionError(f"sync failed unexpectedly: {exc!r}") from exc
            event("sync refused: duplicated session challenge")
        except SddsfError as exc:  # anything else is a finding
            raise AssertionError(f"sync failed unexpectedly: {exc!r}") from exc

    @rule()
    def sync_all(self) -> None:
        for i in range(DEVICES):
            self.sync(i)

    @rule(i=st.integers(0, DEVICES - 1), mode=st.sampled_from(NETWORK_MODES))
    def network(self, i: int, mode: str) -> None:
        self.nets[i].mode = mode

    @rule(victim=st.integers(0, DEVICES - 1), kind=st.sampled_from(
        ["honest", "drop", "drop_renumbered", "reorder", "reorder_renumbered", "duplicate",
         "overlap", "rewrite"]), a=st.integers(0, 1000), b=st.integers(0, 1000))
    def relay_behaviour(self, victim: int, kind: str, a: int, b: int) -> None:
        """Lie to one device about the log (one lie at a time), or stop lying."""
        size = len(self.run(self.genuine_leaves()))
        device = self.devices[victim]
        if kind == "honest" or size < 2 or (
                kind == "overlap" and device.verified_size(self.space) < 1):
            self.harness.honest()
            return
        first, second = a % size, b % size
        if second == first:
            second = (first + 1) % size
        attack: Attack = {
            "drop": lambda: Drop(offsets=frozenset({first})),
            "drop_renumbered": lambda: Drop(offsets=frozenset({first}), renumber=True),
            "reorder": lambda: Reorder(first, second),
            "reorder_renumbered": lambda: Reorder(first, second, renumber=True),
            "duplicate": lambda: Duplicate(first),
            "overlap": lambda: Overlap(1),
            "rewrite": lambda: Rewrite(first),
        }[kind]()
        event(f"relay lies: {kind}")
        self.harness.set_attack(attack, victims={device.device_id}, spaces={self.space})

    def heal(self) -> None:
        self.harness.honest()
        for net in self.nets:
            net.mode = "ok"

    @rule(i=st.integers(0, DEVICES - 1), crash=st.booleans())
    def restart(self, i: int, crash: bool) -> None:
        device = self.devices[i]
        if crash:  # the process dies: only what was flushed is on disk
            self.run(device.relay.aclose())
            device.store.close()
            self.buffered[i].clear()
            self.tokens_buffered[i].clear()
        else:
            self.persisted(i)
            self.run(device.close())
        self.devices[i] = Device.open(self.home(i), passphrase=None, transport=self.nets[i],
                                      clock=self.clock)

    # ---------------------------------------------------------- invariants
    @invariant()
    def never_holds_a_forged_log(self) -> None:
        leaves = self.run(self.genuine_leaves())
        for device in self.devices:
            raw = device.store.get("head", self.space)
            if raw is None:
                continue
            head = decode_tree_head(raw)
            assert head.size <= len(leaves)
            assert head.root == merkle.root_of(leaves[:head.size]), (
                f"{device.name} verified a log that is not a prefix of the relay's")

    @invariant()
    def every_ack_is_in_the_log(self) -> None:
        leaves = self.run(self.genuine_leaves())
        for device in self.devices:
            for key, leaf in device.store.scan("acked", self.space):
                offset = int.from_bytes(key[16:], "big")
                assert offset < len(leaves) and leaves[offset] == leaf, (
                    f"{device.name}: acknowledged op at offset {offset} is not in the log")

    # ------------------------------------------------------------ the end
    def teardown(self) -> None:
        try:
            if hasattr(self, "devices"):
                self.heal()
                for _ in range(2):
                    for device in self.devices:
                        self.run(device.sync())
                self.check_converged()
        finally:
            for device in getattr(self, "devices", []):
                # Closing after a failure must not mask it.
                with contextlib.suppress(Exception):
                    self.run(device.close())
            if hasattr(self, "storage"):
                self.run(self.storage.close())
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def check_converged(self) -> None:
        leaves = self.run(self.genuine_leaves())
        maps = [dict(self.kv(i)) for i in range(DEVICES)]
        texts = [str(self.text(i)) for i in range(DEVICES)]
        assert all(m == maps[0] for m in maps), maps
        assert all(t == texts[0] for t in texts), texts
        for key, value in self.durable.items():
            assert maps[0].get(key) == value, f"edit {key} was lost"
        for token in self.tokens_durable:
            assert token in texts[0], f"text insert {token} was lost"
        heads = set()
        for device in self.devices:
            assert device.pending_count() == 0, f"{device.name} still has pending ops"
            head = decode_tree_head(device.store.get("head", self.space) or b"")
            heads.add((head.size, head.root))
        assert heads == {(len(leaves), merkle.root_of(leaves))}, heads


Convergence.TestCase.settings = settings(
    max_examples=40 if LONG else 5, stateful_step_count=40 if LONG else 30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestConvergence = Convergence.TestCase
