"""What a device's peer-to-peer sync is told (:class:`PeerSyncSettings`) and what
it counts (:class:`PeerSyncStats`); :mod:`sddsf.p2p.sync` uses both."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PeerSyncSettings", "PeerSyncStats"]


@dataclass(frozen=True, slots=True)
class PeerSyncSettings:
    """Where a device listens and how often it looks around (seconds)."""

    listen: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/0",)
    mdns: bool = True
    #: Peers to dial at start (multiaddrs with /p2p/), e.g. from pairing or presence.
    bootstrap: tuple[str, ...] = ()
    #: Look for new local edits (another process may have made them) this often.
    poll_s: float = 0.5
    #: Ask every connected peer for what this device lacks this often, even idle.
    catch_up_s: float = 10.0
    #: Publishing waits for a peer that reads more slowly than this device
    #: writes (so that it loses nothing), but at most this long: a peer stalled
    #: longer is not waited for until it drains, and catches up instead.
    gossip_wait_s: float = 2.0
    #: Publish this device's presence through the relay and read the others'
    #: (hybrid mode, protocol 23.5): how often, and how long a record lives.
    presence: bool = False
    presence_every_s: float = 300.0
    presence_ttl_s: float = 600.0


@dataclass
class PeerSyncStats:
    """Counters since start (for ``sddsf peers`` and the benchmarks)."""

    published: int = 0
    #: Gossip messages published (a burst of ops travels in one).
    messages: int = 0
    applied: int = 0
    known: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)
    catch_ups: int = 0
