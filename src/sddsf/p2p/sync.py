"""Peer-to-peer sync of one device (protocol.md section 23): its libp2p node,
the space topics of its current key epochs, the catch-up exchange, and who may
connect.

Every byte from a peer is judged by the device's engine
(:class:`sddsf.client.engine.mesh.MeshOps`) with the same rules as the relay's
log; a peer is trusted for availability only. Who may connect is decided from
the device's verified registries alone: an active device of this account, or of
a member account of a shared space it syncs. A device revoked since is
disconnected and banned at once.

Work arriving from the node (messages, requests, new peers) is handled one item
at a time on the device's event loop, each under the home's lock, so the device
store sees one writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from sddsf.client.engine.mesh import MeshOps, MeshReport
from sddsf.errors import Code, SddsfError
from sddsf.p2p.discovery import allowed_devices, discover, topic_of, wanted_topics
from sddsf.p2p.node import PeerNode, PeerStatus
from sddsf.p2p.settings import PeerSyncSettings, PeerSyncStats
from sddsf.p2p.topics import PUBSUB_MAX_DATA
from sddsf.protocol import p2p
from sddsf.protocol.encoding import encode

__all__ = ["PeerSync", "PeerSyncSettings", "PeerSyncStats"]

log = logging.getLogger("sddsf.p2p")


class PeerSync:
    """Keeps one device in sync with its peers until :meth:`stop` (see the module
    docstring): ``async with PeerSync(device) as peers:`` starts it.

    Args:
        device: an open :class:`sddsf.client.device.Device` (``lock="operation"``
            when other processes use its home).
        settings: where to listen, bootstrap peers, timings.
        on_applied: told after ops from peers were applied (e.g. to wake a relay
            sync that carries them to the log, in hybrid mode).
    """

    def __init__(self, device: Any, settings: PeerSyncSettings | None = None, *,
                 on_applied: Callable[[MeshReport], None] | None = None) -> None:
        self.device = device
        self.settings = settings or PeerSyncSettings()
        self.on_applied = on_applied
        self.stats = PeerSyncStats()
        self.mesh: MeshOps = device.engine.mesh
        self._allowed: frozenset[bytes] = frozenset()
        self._topics: dict[str, bytes] = {}  # topic -> space
        self._sent_seq: dict[bytes, int] = {}  # per space: the last own seq published
        self._edits_due = False  # an "edits" item waits in the inbox
        self._reg_told = -1  # the registry seq announced to peers
        self._inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._data_version = -1
        self._saved: dict[bytes, bytes] = {}  # the peer rows last stored
        #: Addresses dialled (device id once reached): redialled when not connected.
        self._redial: dict[str, bytes | None] = {}
        self._running = False  # between a successful start and stop
        self.node = PeerNode(device.keys.signing.seed, listen=self.settings.listen,
                             mdns=self.settings.mdns, authorize=self._authorize,
                             on_message=self._message, on_request=self._request,
                             on_peer=self._peer)

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Listen, subscribe to the spaces' topics, dial bootstrap peers.

        Raises:
            UnavailableError: the node could not listen.
        """
        async with self._using():
            self._refresh_allowed()
            self._reg_told = self.device.engine.reg.state().seq
            # The rows an earlier run left (one that was killed still calls its
            # peers connected): the first save replaces them.
            self._saved = dict(self.device.store.scan("peers"))
        await self.node.start()
        self._running = True
        await self._follow_topics()
        self._tasks = [asyncio.create_task(self._work()), asyncio.create_task(self._poll())]
        if self.settings.presence:
            self._tasks.append(asyncio.create_task(self._presence_loop()))
        for addr in self.settings.bootstrap:
            await self.dial(addr)

    async def __aenter__(self) -> PeerSync:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop the node and the loops (idempotent). The stored peer rows then say
        that no peer is connected and that this device listens nowhere.

        Raises:
            Nothing of its own.
        """
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        last = self.node.peers()  # as they were until now
        await self.node.stop()
        if self._running:
            self._running = False
            await self._save_peers(last)

    async def dial(self, addr: str) -> bytes | None:
        """Connect to a peer by multiaddr (a refused or unreachable one is logged).

        Args:
            addr: a multiaddr ending in ``/p2p/<peer id>``.

        Returns:
            Its device id, or None when it could not be reached or is not allowed.

        Raises:
            Nothing of its own.
        """
        try:
            device_id = await self.node.dial(addr)
        except SddsfError as exc:
            log.info("peer %s: %s", addr, exc.message)
            self._redial.setdefault(addr, None)  # tried again every catch_up_s
            return None
        self._redial[addr] = device_id
        self._inbox.put_nowait(("peer", device_id))
        return device_id

    async def _reconnect(self) -> None:
        # Addresses dialled before (bootstrap, presence) whose device is not
        # connected now: dial again (a peer that restarted, or a healed network).
        # mDNS peers are redialled by the node itself.
        connected = {p.device_id for p in self.node.peers() if p.connected}
        for addr, device_id in list(self._redial.items()):
            if device_id is None or (device_id not in connected and device_id in self._allowed):
                await self.dial(addr)

    def changed(self) -> None:
        """Call after local edits: they are sealed and published at once.

        Raises:
            Nothing of its own.
        """
        self._edits()

    def _edits(self) -> None:
        # One "edits" item at a time in the inbox: a burst of edits is published
        # by one pass, not one pass each.
        if not self._edits_due:
            self._edits_due = True
            self._inbox.put_nowait(("edits", None))

    def peers(self) -> list[PeerStatus]:
        """Peers discovered or connected.

        Returns:
            Each peer's device id, peer id, addresses, whether it is connected,
            how it was found and when it was last seen.

        Raises:
            Nothing of its own.
        """
        return self.node.peers()

    @property
    def addrs(self) -> list[str]:
        """This device's multiaddrs (with its peer id), to give to other devices."""
        return self.node.addrs

    @contextlib.asynccontextmanager
    async def _using(self) -> AsyncIterator[None]:
        # The home (other processes) and the engine (this process's sync task).
        async with self.device.exclusive(), self.device.engine.lock:
            yield

    # ------------------------------------------------------------ node side
    def _authorize(self, device_id: bytes) -> bool:
        # Called from the node's thread: reads one immutable set.
        return device_id in self._allowed

    def _message(self, topic: str, sender: bytes, data: bytes) -> None:
        self._inbox.put_nowait(("message", (topic, sender, data)))

    def _peer(self, status: PeerStatus) -> None:
        if status.connected:
            self._inbox.put_nowait(("peer", status.device_id))

    async def _request(self, sender: bytes, data: bytes) -> bytes:
        req = p2p.decode_request(data)
        async with self._using():
            return p2p.encode_response(self.mesh.respond(req, sender))

    # ------------------------------------------------------------ the loops
    async def _work(self) -> None:
        while True:
            kind, item = await self._inbox.get()
            try:
                await self._handle(kind, item)
            except SddsfError as exc:
                log.warning("peer-to-peer sync: [%s] %s", exc.code.value, exc.message)
            except Exception:  # a bug: logged, the loop goes on
                log.exception("peer-to-peer sync failed unexpectedly")

    async def _handle(self, kind: str, item: Any) -> None:
        if kind == "message":
            await self._on_gossip(*item)
        elif kind == "peer":
            await self.catch_up(item)
        elif kind == "edits":
            self._edits_due = False
            await self.publish_pending()
        elif kind == "cut":
            await self.node.disconnect(item)
        elif kind == "catch_up_all":
            await self._reconnect()
            for status in self.node.peers():
                if status.connected:
                    await self.catch_up(status.device_id)

    async def _poll(self) -> None:
        # Edits made by another process show up as a new data version of the
        # home; a periodic catch-up covers gossip lost while a peer was away.
        waited = 0.0
        while True:
            await asyncio.sleep(self.settings.poll_s)
            waited += self.settings.poll_s
            version = self.device.store.data_version()
            if version != self._data_version or any(self.device.engine.docs.buffers.values()):
                self._data_version = version
                self._edits()
            await self._save_peers()
            if waited >= self.settings.catch_up_s:
                waited = 0.0
                self._inbox.put_nowait(("catch_up_all", None))

    async def _save_peers(self, peers: list[PeerStatus] | None = None) -> None:
        # What `sddsf peers` shows from another process: the peers and this
        # device's own addresses, in the home's store (only when they changed).
        # Once stopped: no peer connected (those that were, seen until now) and
        # no address (nothing listens there any more).
        running, now = self._running, time.time_ns() // 1_000_000
        rows = {p.device_id: encode([
            p.peer_id, list(p.addrs), p.connected and running, p.found_by,
            p.last_seen_ms if running or not p.connected else max(now, p.last_seen_ms)])
            for p in (self.node.peers() if peers is None else peers)}
        rows[b"self"] = encode([self.node.peer_id, self.node.addrs if running else [],
                                running, "self", 0])
        if rows == self._saved:
            return
        async with self._using():
            with self.device.store.batch() as b:
                for key in self._saved.keys() - rows.keys():
                    b.delete("peers", key)
                for key, value in rows.items():
                    if self._saved.get(key) != value:
                        b.put("peers", key, value)
            self._data_version = self.device.store.data_version()
        self._saved = rows

    async def _presence_loop(self) -> None:
        while True:
            try:
                await self.exchange_presence()
            except SddsfError as exc:  # the relay is down: the mesh goes on without it
                log.info("presence through the relay: %s", exc.message)
            await asyncio.sleep(self.settings.presence_every_s)

    async def exchange_presence(self) -> int:
        """Publish this device's signed, encrypted presence record in every space
        it syncs, read the other devices' records, and dial the ones that are
        allowed and not connected (protocol 23.5).

        Returns:
            How many peers were dialled.

        Raises:
            UnavailableError: the relay cannot be reached.
        """
        found = await discover(self.device, self.node, self._using,
                               int(self.settings.presence_ttl_s * 1000))
        connected = {p.device_id for p in self.node.peers() if p.connected}
        dialled = 0
        for device_id, addrs in found.items():
            if device_id in connected or device_id not in self._allowed:
                continue
            for addr in addrs:
                if await self.dial(addr) == device_id:
                    dialled += 1
                    break
        return dialled

    # ------------------------------------------------------------ operations
    async def publish_pending(self) -> int:
        """Seal buffered edits, then publish this device's ops that its peers
        have not been sent yet; announce new registry entries.

        Returns:
            How many ops were published.

        Raises:
            UnavailableError: the node is stopped.
            UsageError: the flush refused an edit (see ``Device.flush``).
        """
        out: dict[str, list[bytes]] = {}  # topic -> new ops, in seq order
        async with self._using():
            self.device.engine.outbox.flush()
            self._refresh_allowed()
            changed_topics = self._topics != wanted_topics(self.device)
            for space_id, _ in self.device.synced_spaces():
                topic = topic_of(self.device, space_id)
                if topic is None:
                    continue
                # Only ops sealed since the last publication are read (a device
                # with no relay keeps every op pending); a chain head that moved
                # back (ops sealed again) is published again from there.
                last = self.device.engine.outbox.head(space_id)[0] - 1
                sent = min(self._sent_seq.get(space_id, 0), last)
                for seq, raw in self.mesh.outgoing(space_id, after=sent):
                    out.setdefault(topic, []).append(raw)
                    sent = seq
                self._sent_seq[space_id] = sent
            registry = self._registry_news()
        if changed_topics:
            await self._follow_topics()
        messages = [(topic, data) for topic, ops in out.items()
                    for data in p2p.pack_ops(ops, PUBSUB_MAX_DATA)]
        if registry is not None:
            first, entries = registry
            news = p2p.encode_gossip(p2p.Gossip(p2p.GossipKind.REGISTRY, entries, first))
            messages.extend((topic, news) for topic in list(self._topics))
        # New ops travel packed, as few messages as fit, in one hand-over that
        # waits there for the peers' queues (never dropped for a full queue).
        await self.node.publish_many(messages, self.settings.gossip_wait_s)
        published = sum(len(ops) for ops in out.values())
        self.stats.published += published
        self.stats.messages += len(messages)
        return published

    async def catch_up(self, peer: bytes) -> int:
        """Ask a peer for everything this device lacks in every space it syncs.

        Args:
            peer: the peer's device id.

        Returns:
            How many ops were applied.

        Raises:
            Nothing for the peer's failures (an unreachable or refusing peer is
            logged and skipped).
        """
        applied = 0
        for space_id, _ in self.device.synced_spaces():
            for _ in range(1000):  # bounded: at most 1000 responses per space
                async with self._using():
                    if not self.mesh.may_read(space_id, peer):
                        break
                    req = self.mesh.request(space_id)
                try:
                    raw = await self.node.request(peer, p2p.encode_request(req))
                    resp = p2p.decode_response(raw)
                except SddsfError as exc:
                    log.info("catch-up with %s: %s", peer.hex()[:12], exc.message)
                    break
                report = await self._take(space_id, req, resp, peer)
                applied += report.applied
                # Ask again only after progress: an answer of ops this device
                # already holds (a replay) with "more" set would otherwise hold
                # the worker for a thousand exchanges.
                if not resp.more or not report.applied:
                    break
        self.stats.catch_ups += 1
        return applied

    async def _take(self, space_id: bytes, req: p2p.CatchUpRequest,
                    resp: p2p.CatchUpResponse, peer: bytes) -> MeshReport:
        async with self._using():
            if resp.registry:
                self._take_registry(req.registry_seq + 1, resp.registry)
            if resp.packages:
                try:
                    self.mesh.accept_packages(space_id, resp.packages)
                except SddsfError as exc:
                    log.warning("key packages from peer %s refused: %s", peer.hex()[:12],
                                exc.message)
            report = self.mesh.accept(space_id, resp.ops)
        await self._after(report, peer)
        return report

    async def _on_gossip(self, topic: str, sender: bytes, data: bytes) -> None:
        space_id = self._topics.get(topic)
        if space_id is None:
            return
        message = p2p.decode_gossip(data)
        if message.kind == p2p.GossipKind.REGISTRY:
            async with self._using():
                self._take_registry(message.first, message.items)
            await self._cut_off_revoked()
            return
        async with self._using():
            report = self.mesh.accept(space_id, message.items)
        await self._after(report, sender)
        if report.waiting or report.need_registry or report.need_keys:
            await self.catch_up(sender)  # it holds what this op builds on

    async def _after(self, report: MeshReport, peer: bytes) -> None:
        self.stats.applied += report.applied
        self.stats.known += report.known
        self.stats.refused.extend(report.refused)
        for code, message in report.refused:
            log.warning("op from peer %s refused: [%s] %s", peer.hex()[:12], code, message)
        if report.blamed or any(c == Code.SIG_INVALID.value for c, _ in report.refused):
            await self.node.disconnect(peer)  # forged bytes: no honest carrier sends them
        if report.applied and self.on_applied is not None:
            self.on_applied(report)

    # ---------------------------------------------------------- registry side
    def _take_registry(self, first: int, entries: Sequence[bytes]) -> None:
        try:
            if self.mesh.accept_registry(first, entries):
                self._refresh_allowed()
        except SddsfError as exc:
            log.warning("registry entries from a peer refused: %s", exc.message)

    def _registry_news(self) -> tuple[int, tuple[bytes, ...]] | None:
        # Registry entries this device has that it has not announced (a revocation
        # made here reaches peers that cannot reach the relay).
        state = self.device.engine.reg.state()
        if state.seq <= self._reg_told:
            return None
        first = self._reg_told + 1
        entries = tuple(v for _, v in self.device.store.scan("reg", start=first.to_bytes(8, "big")))
        self._reg_told = state.seq
        return first, entries

    def _refresh_allowed(self) -> None:
        allowed = allowed_devices(self.device)
        revoked = self._allowed - allowed
        self._allowed = allowed
        for device_id in revoked:
            self._inbox.put_nowait(("cut", device_id))

    async def _cut_off_revoked(self) -> None:
        for status in self.node.peers():
            if status.device_id not in self._allowed:
                await self.node.disconnect(status.device_id)

    # ---------------------------------------------------------------- topics
    async def _follow_topics(self) -> None:
        async with self._using():
            wanted = wanted_topics(self.device)
        for topic in set(self._topics) - set(wanted):
            await self.node.unsubscribe(topic)
        for topic in set(wanted) - set(self._topics):
            await self.node.subscribe(topic)
        self._topics = wanted
