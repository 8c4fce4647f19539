"""Peer-to-peer transport for SDDSF devices over libp2p (py-libp2p, trio-based).

:class:`PeerNode` is the asyncio API: a libp2p host keyed by the device's
Ed25519 signing key that moves opaque bytes (pubsub messages, request/response)
between devices that ``authorize`` accepts. :func:`device_of` maps a libp2p peer
id to the SDDSF device id behind it.

Modules: :mod:`~sddsf.p2p.node` (the API), :mod:`~sddsf.p2p.host` (the trio
side), :mod:`~sddsf.p2p.bridge` (asyncio <-> trio), :mod:`~sddsf.p2p.gate`
(admission), :mod:`~sddsf.p2p.rpc` (the request/response framing),
:mod:`~sddsf.p2p.local` (addresses, mDNS), :mod:`~sddsf.p2p.peers` (peer
statuses), :mod:`~sddsf.p2p.peerid` (peer id <-> device id, no libp2p needed),
:mod:`~sddsf.p2p.sync` (:class:`~sddsf.p2p.sync.PeerSync`: a device's sync with
its peers), :mod:`~sddsf.p2p.hybrid` (with the relay too),
:mod:`~sddsf.p2p.discovery` (presence records read through the relay).
"""

from sddsf.p2p.node import SYNC_PROTOCOL, PeerNode, PeerStatus, device_of

__all__ = ["SYNC_PROTOCOL", "PeerNode", "PeerStatus", "device_of"]
