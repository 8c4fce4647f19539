"""``sddsf peers`` and the peer-to-peer side of ``sync --watch --mode p2p|hybrid``.

``--mode p2p`` syncs only with peers (libp2p: mDNS on the local network, or
``--peer`` addresses); ``--mode hybrid`` runs the relay runner too: ops go to
peers directly and to the relay whenever it is reachable, and ops learnt from
peers are carried to the relay's log (protocol.md section 23). The watcher
stores its peers in the home, so ``sddsf peers`` in another terminal shows them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import click

from sddsf.cli.output import JSON_HELP, Out, clean, iso_time
from sddsf.errors import ConfigError
from sddsf.protocol.encoding import decode

__all__ = ["MODES", "PeerOptions", "log_to_stderr", "peer_options", "peer_rows", "register",
           "resolve", "start_peers"]

#: What ``sync --watch --mode`` accepts (relay stays the default until hybrid has a
#: longer record).
MODES = ("relay", "p2p", "hybrid")


class PeerOptions:
    """The peer-to-peer options of ``sync --watch``."""

    def __init__(self, mode: str, listen: tuple[str, ...], peers: tuple[str, ...],
                 mdns: bool) -> None:
        self.mode = mode
        self.listen = listen or ("/ip4/0.0.0.0/tcp/0",)
        self.peers = peers
        self.mdns = mdns


def peer_options(f: Any) -> Any:
    """Add ``--mode``, ``--p2p``, ``--listen``, ``--peer`` and ``--no-mdns`` to a command."""
    f = click.option("--no-mdns", "no_mdns", is_flag=True,
                     help="With --mode p2p|hybrid: do not look for peers on the local "
                          "network by mDNS (--peer addresses are dialled, and in hybrid "
                          "mode the peers' presence records on the relay).")(f)
    f = click.option("--peer", "peers", multiple=True, metavar="MULTIADDR",
                     help="With --mode p2p|hybrid: a peer to dial, e.g. "
                          "/ip4/192.168.1.7/tcp/4001/p2p/12D3Koo... (repeatable).")(f)
    f = click.option("--listen", multiple=True, metavar="MULTIADDR",
                     help="With --mode p2p|hybrid: where to listen (default "
                          "/ip4/0.0.0.0/tcp/0; repeatable).")(f)
    f = click.option("--p2p", "p2p_flag", is_flag=True,
                     help="Short for --mode p2p.")(f)
    return click.option("--mode", type=click.Choice(MODES), default=None,
                        help="With --watch: sync through the relay (default), directly "
                             "with peers (p2p), or both (hybrid).")(f)


def resolve(mode: str | None, p2p_flag: bool, listen: tuple[str, ...], peers: tuple[str, ...],
            no_mdns: bool, watch: bool) -> PeerOptions:
    """The options as given, checked.

    Raises:
        ConfigError: ``--mode``/``--p2p`` without ``--watch``, or both given differently.
    """
    if p2p_flag and mode not in (None, "p2p"):
        raise ConfigError("--p2p means --mode p2p; give one of them")
    chosen = "p2p" if p2p_flag else (mode or "relay")
    if chosen != "relay" and not watch:
        raise ConfigError("--mode p2p|hybrid keeps syncing with peers: use it with --watch")
    if chosen == "relay" and (listen or peers or no_mdns):
        raise ConfigError("--listen, --peer and --no-mdns need --mode p2p or hybrid")
    return PeerOptions(chosen, listen, peers, not no_mdns)


class _LogLine(logging.Formatter):
    """A log record as one CLI line, ``warning: MESSAGE`` (``error: ...``): inert
    text, with the traceback only under SDDSF_DEBUG."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname.lower()}: {clean(record.getMessage())}"
        if record.exc_info and os.environ.get("SDDSF_DEBUG"):
            line += "\n" + self.formatException(record.exc_info)
        return line


def log_to_stderr() -> None:
    """Show SDDSF's own warnings (``sddsf.*`` loggers) as ``warning: ...`` lines on
    stderr, and no other library's (every library's under SDDSF_DEBUG).

    libp2p calls the root ``logging.debug()`` when a connection opens, which runs
    ``logging.basicConfig()`` if the root logger has no handler: every library's
    warnings were then printed on the watcher's stderr, tracebacks included
    (zeroconf's about a network interface that is down). With this handler on
    the root logger that call does nothing.

    Raises:
        Nothing.
    """
    root = logging.getLogger()
    if any(isinstance(h.formatter, _LogLine) for h in root.handlers):
        return  # once per process
    everything = bool(os.environ.get("SDDSF_DEBUG"))
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_LogLine())
    handler.addFilter(lambda r: everything or r.name == "sddsf" or r.name.startswith("sddsf."))
    root.addHandler(handler)


async def start_peers(device: Any, options: PeerOptions, say: Any,
                      on_applied: Any = None) -> Any:
    """Start the device's peer-to-peer sync.

    Returns:
        The running :class:`sddsf.p2p.sync.PeerSync` (stop it before closing the device).

    Raises:
        ConfigError: the ``p2p`` extra (libp2p) is not installed.
        UnavailableError: the node could not listen.
    """
    log_to_stderr()
    try:
        from sddsf.p2p.sync import PeerSync, PeerSyncSettings  # noqa: PLC0415 - optional
    except ImportError as exc:
        raise ConfigError("peer-to-peer sync needs the p2p extra: pip install 'sddsf[p2p]' "
                          f"({exc})") from None
    # Hybrid: devices also find each other through the relay (presence records).
    peer_sync = PeerSync(device, PeerSyncSettings(listen=options.listen, mdns=options.mdns,
                                                  bootstrap=options.peers,
                                                  presence=options.mode == "hybrid"),
                         on_applied=on_applied)
    await peer_sync.start()
    say("peers", "listening for peers at " + ", ".join(peer_sync.addrs),
        addrs=peer_sync.addrs, peer=peer_sync.node.peer_id)
    return peer_sync


def peer_rows(device: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """This device's own peer-to-peer addresses and its peers, as the watcher stored them."""
    state = device.registry()
    me: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = []
    for key, raw in device.store.scan("peers"):
        row: list[Any] = decode(raw)  # type: ignore[assignment]  # (this device's own row)
        peer_id, addrs, connected, found_by, last_seen = row
        if key == b"self":
            me = {"peer": peer_id, "addrs": list(addrs)}
            continue
        rec = state.device(key)
        rows.append({"device": rec.name if rec else None, "device_id": key.hex(),
                     "peer": peer_id, "addrs": list(addrs), "connected": connected,
                     "found_by": found_by, "transport": "libp2p (tcp, noise, yamux)",
                     "active": state.is_active(key),
                     "last_seen": iso_time(last_seen) if last_seen else None})
    return me, rows


@click.command()
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def peers(ctx: click.Context, as_json: bool) -> None:
    """Peers found and connected by `sync --watch --mode p2p|hybrid` (running, or the
    last one)."""
    from sddsf.cli.device_cmds import _emit, _run, _with_device  # noqa: PLC0415 - no cycle

    async def go(d: Any) -> dict[str, Any]:
        me, rows = peer_rows(d)
        return {"self": me, "peers": rows}

    result = _run(_with_device(ctx, go))

    def text(out: Out) -> None:
        me = result["self"]
        if me is None:
            out.line("no peer-to-peer sync has run on this device: start "
                     "`sddsf sync --watch --mode hybrid` (or --mode p2p)")
            return
        out.line(f"this device: {me['peer']}")
        for addr in me["addrs"]:
            out.line(f"  {addr}")
        if not me["addrs"]:  # the watcher stopped (it leaves no address behind)
            out.line("  not listening: its `sync --watch --mode p2p|hybrid` has stopped")
        if not result["peers"]:
            out.line("no peers found yet")
        for p in result["peers"]:
            state = "connected" if p["connected"] else "seen"
            who = p["device"] or "unknown device"
            out.line(f"{who} ({p['device_id'][:12]}): {state}, found by {p['found_by']}, "
                     f"{p['transport']}, last seen {p['last_seen'] or 'never'}")

    _emit(result, as_json, text)


def register(cli: click.Group) -> None:
    """Attach ``peers`` to the top-level group."""
    cli.add_command(peers)

