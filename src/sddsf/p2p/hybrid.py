"""Hybrid mode (protocol.md 23.7): the relay runner and peer-to-peer sync of one
device, together."""

from __future__ import annotations

import dataclasses
from typing import Any

from sddsf.client.runner import Runner, RunnerSettings
from sddsf.p2p.sync import PeerSync, PeerSyncSettings

__all__ = ["HybridSync"]


class HybridSync:
    """Hybrid mode (protocol 23.7): the relay runner and peer-to-peer sync together.

    Edits go to peers at once and to the relay whenever it is reachable; ops
    learnt from peers wake a relay sync that carries them to the log; devices
    also find each other through presence records on the relay. When the relay
    is down the peers keep syncing; when it is back the log catches up.
    ``async with HybridSync(device) as sync:`` starts both; ``sync.peers`` and
    ``sync.runner`` are the two halves.

    Args:
        device: an open device (``lock="operation"`` if other processes use its home).
        settings: the peer side's settings (``presence`` is turned on).
        runner_settings: the relay runner's timing.
    """

    def __init__(self, device: Any, settings: PeerSyncSettings | None = None,
                 runner_settings: RunnerSettings | None = None) -> None:
        base = settings or PeerSyncSettings()
        self.runner = Runner(device, runner_settings or RunnerSettings())
        self.peers = PeerSync(device, dataclasses.replace(base, presence=True),
                              on_applied=lambda _report: self.runner.changed())

    async def __aenter__(self) -> HybridSync:
        await self.peers.start()
        await self.runner.start()
        self.runner.changed()  # a first relay sync at once
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.peers.stop()
        finally:
            await self.runner.stop()

    def changed(self) -> None:
        """Call after local edits: published to peers and pushed to the relay.

        Raises:
            Nothing of its own.
        """
        self.peers.changed()
        self.runner.changed()
