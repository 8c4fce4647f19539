"""``sddsf sync --watch --mode p2p|hybrid`` and ``sddsf peers`` between homes on
one machine: real ``sddsf`` processes, each watcher listening on loopback only
(``--listen /ip4/127.0.0.1/tcp/0``), and a real relay process.

* Two homes find each other by mDNS, or by ``--no-mdns --peer`` with the address
  that the first watcher printed and that ``sddsf peers --json`` shows; an edit
  made with ``sddsf put`` in one home is read with ``ls``/``get`` in the other;
  ``sddsf peers`` (JSON and text) names the other device, how it was found and
  when it was last seen, and says so when no peer-to-peer sync ever ran; once
  the watchers stop (or one was killed and another started) nobody is listed as
  connected.
* ``--mode hybrid``: an edit reaches the other home and the relay's log (a third
  home that only runs plain ``sddsf sync`` reads it), also when the home that
  made it syncs with peers only and a hybrid home carries it to the relay.
* Option errors are one ``error: ... [config]`` line; Ctrl-C stops a watcher
  with exit status 0 and no traceback; a ``--peer`` that is not up yet is dialled
  again later, and meanwhile nothing is printed (no library log lines: only
  SDDSF's own warnings reach stderr).

The same commands between network namespaces are tests/p2p/test_netns_mesh.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("SDDSF_REQUIRE_P2P") != "1":
    pytest.importorskip("libp2p", reason="peer-to-peer sync needs the p2p extra (libp2p)")

import test_cli_homes as homes
from livekit import RelayProcess, held_port
from test_cli_homes import Result, cli_env, fails, ok, ok_json, spawn, succeeded

from sddsf.client.device import Device
from sddsf.p2p.peerid import peer_id_of

relay = homes.relay  # the module's relay-process fixture

#: Where every watcher listens: loopback only, a port the kernel picks.
LOOPBACK = "/ip4/127.0.0.1/tcp/0"
WAIT_S = 45.0  # the most any discovery or convergence below may take
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
TRANSPORT = "libp2p (tcp, noise, yamux)"


class Watcher:
    """``sddsf sync --watch --json ARGS`` running on one home: its events as they come."""

    def __init__(self, home: Path, *args: str) -> None:
        self.running = spawn(home, "sync", "--watch", "--json", *args)
        self.proc = self.running.proc
        self.events: list[dict[str, Any]] = []
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, ""):
            self.out.append(line)
            self.events.append(json.loads(line))  # every line of --json is one object

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.err.extend(iter(self.proc.stderr.readline, ""))

    def wait_event(self, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first event that passes ``check`` (waiting for it, at most WAIT_S)."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for event in list(self.events):
                if check(event):
                    return event
            assert self.proc.poll() is None, ("the watcher ended", self.events,
                                              "".join(self.err))
            time.sleep(0.1)
        raise AssertionError(f"no such event in {self.events}; stderr {''.join(self.err)}")

    def listening(self) -> dict[str, Any]:
        """The event that says where this watcher listens for peers."""
        return self.wait_event(lambda e: e["event"] == "peers" and "addrs" in e)

    def stop(self, sig: signal.Signals = signal.SIGINT) -> Result:
        """Send ``sig`` (Ctrl-C by default) and collect what the process did."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for t in self._threads:
            t.join(timeout=10)
        return Result(self.running.args, self.proc.returncode, "".join(self.out),
                      "".join(self.err))


async def _make_homes(url: str, root: Path, names: tuple[str, ...]) -> list[Path]:
    # Plaintext store keys: no Argon2id per command (the passphrase is not the subject).
    first, _ = await Device.create_account(root / names[0], url, names[0], passphrase=None,
                                           insecure_plaintext=True)
    devices = [first]
    try:
        await first.create_space("notes")
        for name in names[1:]:
            devices.append(await Device.add_local(first, root / name, name, passphrase=None,
                                                  insecure_plaintext=True))
        for dev in devices + devices:  # twice: every device holds every key and entry
            await dev.sync()
    finally:
        for dev in devices:
            await dev.close()
    return [root / n for n in names]


def make_homes(relay: RelayProcess, root: Path, *names: str) -> list[Path]:
    """Homes of one account (devices ``names``), each holding the space ``notes``."""
    return asyncio.run(_make_homes(relay.base_url, root, names))


def until(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def notes(home: Path) -> dict[str, str]:
    return dict(ok_json(home, "ls", "notes"))


def peers_json(home: Path) -> dict[str, Any]:
    return dict(ok_json(home, "peers"))


def peer_row(home: Path, device_id: str) -> dict[str, Any] | None:
    """``home``'s row of ``device_id`` in ``sddsf peers --json``, if it is connected."""
    rows = [p for p in peers_json(home)["peers"] if p["device_id"] == device_id]
    return rows[0] if rows and rows[0]["connected"] else None


def peer_id(home: Path) -> str:
    """The libp2p peer id of the device of ``home`` (from its signing key)."""
    async def read() -> str:
        device = Device.open(home, passphrase=None)
        try:
            return peer_id_of(device.keys.signing.public.raw)
        finally:
            await device.close()
    return asyncio.run(read())


def device_id(home: Path) -> str:
    return str(ok_json(home, "status")["device_id"])


def stopped_cleanly(result: Result) -> list[dict[str, Any]]:
    """The events of a watcher that Ctrl-C stopped: exit 0, no traceback, last ``stopped``."""
    succeeded(result)
    assert result.stderr == "", result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events and events[-1]["event"] == "stopped", events
    assert not [e for e in events if e["event"] == "error"], events
    return events


def holds_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (Linux: its /proc fd links)."""
    fds = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        return any(os.readlink(fd) == str(path) for fd in fds.iterdir())
    return False


def check_listening(event: dict[str, Any]) -> None:
    """A ``peers`` event of a watcher listening on loopback only."""
    assert event["addrs"], event
    for addr in event["addrs"]:
        assert re.fullmatch(r"/ip4/127\.0\.0\.1/tcp/\d+/p2p/" + event["peer"], addr), addr


def check_row(row: dict[str, Any] | None, name: str, dev_id: str, peer: dict[str, Any],
              found_by: set[str]) -> None:
    """One connected row of ``sddsf peers --json``: the device ``name`` whose watcher
    printed ``peer`` (its ``peers`` event)."""
    assert row is not None, (name, "not connected")
    assert row["device"] == name and row["device_id"] == dev_id, row
    assert row["peer"] == peer["peer"], row
    assert row["connected"] is True and row["active"] is True, row
    assert row["found_by"] in found_by, row
    assert row["transport"] == TRANSPORT, row
    assert ISO_UTC.match(row["last_seen"] or ""), row
    assert set(row) == {"device", "device_id", "peer", "addrs", "connected", "found_by",
                        "transport", "active", "last_seen"}, row


def check_peers_text(home: Path, me: dict[str, Any], other: str, other_id: str) -> None:
    """The text form of ``sddsf peers`` while ``other`` is connected."""
    lines = ok(home, "peers").splitlines()
    assert lines[0] == f"this device: {me['peer']}", lines
    assert [ln.strip() for ln in lines[1:1 + len(me["addrs"])]] == me["addrs"], lines
    rows = [ln for ln in lines if ln.startswith(f"{other} ({other_id[:12]}): ")]
    assert len(rows) == 1, lines
    assert re.fullmatch(rf"{other} \({other_id[:12]}\): connected, found by "
                        rf"(mdns|inbound|dial), {re.escape(TRANSPORT)}, last seen "
                        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows[0]), rows[0]


def check_stopped(home: Path, me: dict[str, Any], was: dict[str, Any] | None, other: str,
                  other_id: str) -> None:
    """``sddsf peers`` after the watcher of ``home`` stopped: the peer ``other``, seen
    until then and no longer connected; this device listening nowhere."""
    assert was is not None
    after = peers_json(home)
    assert after["self"] == {"peer": me["peer"], "addrs": []}, after
    (row,) = after["peers"]
    same = ("device", "device_id", "peer", "found_by", "transport", "active")
    assert row["connected"] is False, row
    assert {k: row[k] for k in same} == {k: was[k] for k in same}, (row, was)
    assert ISO_UTC.match(row["last_seen"]) and row["last_seen"] >= was["last_seen"], row
    lines = ok(home, "peers").splitlines()
    assert lines[0] == f"this device: {me['peer']}", lines
    assert "not listening" in lines[1], lines
    assert lines[2].startswith(f"{other} ({other_id[:12]}): seen, found by "
                               f"{row['found_by']}, {TRANSPORT}, last seen "), lines
    assert len(lines) == 3, lines


def test_two_homes_on_loopback_find_each_other_by_mdns_and_sync(
        relay: RelayProcess, tmp_path: Path) -> None:
    laptop, phone = make_homes(relay, tmp_path, "laptop", "phone")
    ids = {laptop: device_id(laptop), phone: device_id(phone)}
    # Before any peer-to-peer sync: nothing stored, and the text says what to run.
    assert peers_json(laptop) == {"self": None, "peers": []}
    text = ok(laptop, "peers")
    assert text.startswith("no peer-to-peer sync has run on this device"), text
    assert "sddsf sync --watch --mode hybrid" in text, text

    watchers = {h: Watcher(h, "--mode", "p2p", "--listen", LOOPBACK) for h in (laptop, phone)}
    try:
        me = {h: w.listening() for h, w in watchers.items()}
        for event in me.values():
            check_listening(event)
        # No address was given: mDNS finds the other home (heard over the machine's
        # own multicast), and the watchers connect over loopback.
        until(lambda: all(peer_row(h, ids[o]) for h, o in ((laptop, phone), (phone, laptop))),
              "both homes to list the other as connected")
        rows = {laptop: peer_row(laptop, ids[phone]), phone: peer_row(phone, ids[laptop])}
        check_row(rows[laptop], "phone", ids[phone], me[phone], {"mdns", "inbound"})
        check_row(rows[phone], "laptop", ids[laptop], me[laptop], {"mdns", "inbound"})
        assert "mdns" in {r["found_by"] for r in rows.values() if r}, rows
        for h in (laptop, phone):
            assert peers_json(h)["self"] == {"peer": me[h]["peer"],
                                             "addrs": me[h]["addrs"]}
        check_peers_text(laptop, me[laptop], "phone", ids[phone])
        check_peers_text(phone, me[phone], "laptop", ids[laptop])

        # An edit made by another command in one home appears in the other, both ways.
        ok(laptop, "put", "notes", "milk", "2 l")
        until(lambda: notes(phone).get("milk") == "2 l", "the laptop's edit at the phone")
        assert ok(phone, "get", "notes", "milk") == "2 l\n"
        watchers[phone].wait_event(lambda e: e["event"] == "peers" and e.get("applied") == 1)
        ok(phone, "put", "notes", "eggs", "12")
        until(lambda: notes(laptop) == {"milk": "2 l", "eggs": "12"},
              "the phone's edit at the laptop")
    finally:
        results = {h: w.stop() for h, w in watchers.items()}
    for result in results.values():
        events = stopped_cleanly(result)
        # --mode p2p never talks to the relay: no relay connection events.
        assert not {e["event"] for e in events} & {"online", "offline", "synced"}, events
        # Each home's own edit stays queued for the relay (a later relay sync sends it).
        assert events[-1]["pending"] == 1, events
    # Once the watchers are gone, `sddsf peers` no longer calls anyone connected, nor
    # gives addresses where nothing listens.
    for h, other in ((laptop, phone), (phone, laptop)):
        check_stopped(h, me[h], rows[h], other.name, ids[other])


def test_no_mdns_dials_the_address_the_other_watcher_printed(
        relay: RelayProcess, tmp_path: Path) -> None:
    laptop, phone = make_homes(relay, tmp_path, "laptop", "phone")
    ids = {laptop: device_id(laptop), phone: device_id(phone)}
    first = Watcher(laptop, "--mode", "p2p", "--no-mdns", "--listen", LOOPBACK)
    watchers = [first]
    try:
        printed = first.listening()
        check_listening(printed)
        # `sddsf peers --json` in the same home shows the addresses the watcher printed.
        until(lambda: peers_json(laptop)["self"] is not None, "the laptop's own addresses")
        shown = peers_json(laptop)["self"]
        assert shown == {"peer": printed["peer"], "addrs": printed["addrs"]}
        assert peers_json(laptop)["peers"] == []  # nobody to hear: mDNS is off
        second = Watcher(phone, "--p2p", "--no-mdns", "--listen", LOOPBACK,
                         "--peer", shown["addrs"][0])
        watchers.append(second)
        me_phone = second.listening()
        until(lambda: bool(peer_row(laptop, ids[phone]) and peer_row(phone, ids[laptop])),
              "the dialled connection on both sides")
        check_row(peer_row(phone, ids[laptop]), "laptop", ids[laptop], printed, {"dial"})
        check_row(peer_row(laptop, ids[phone]), "phone", ids[phone], me_phone, {"inbound"})
        check_peers_text(phone, me_phone, "laptop", ids[laptop])

        ok(phone, "put", "notes", "tea", "green")
        until(lambda: notes(laptop).get("tea") == "green", "the phone's edit at the laptop")
        assert ok_json(laptop, "get", "notes", "tea") == {"key": "tea", "value": "green"}
        ok(laptop, "rm", "notes", "tea")
        until(lambda: "tea" not in notes(phone), "the laptop's removal at the phone")

        # The phone's watcher is killed: the laptop's sees the connection go.
        assert second.stop(signal.SIGKILL).returncode == -signal.SIGKILL
        until(lambda: not peer_row(laptop, ids[phone]), "the laptop to see the phone go")
        was = [p for p in peers_json(laptop)["peers"] if p["device_id"] == ids[phone]]
        assert was and ISO_UTC.match(was[0]["last_seen"]), was
        # Started again without --peer (and nobody dials it): what the killed watcher
        # left in the home no longer says the laptop is connected.
        third = Watcher(phone, "--p2p", "--no-mdns", "--listen", LOOPBACK)
        watchers[1] = third
        again = third.listening()
        until(lambda: peers_json(phone)["self"] == {"peer": again["peer"],
                                                     "addrs": again["addrs"]},
              "the phone's new addresses")
        assert not [p for p in peers_json(phone)["peers"] if p["connected"]], peers_json(phone)
    finally:
        results = [w.stop() for w in watchers]
    for result in results:
        stopped_cleanly(result)


def relay_ops(relay: RelayProcess) -> list[tuple[bytes, int, bytes]]:
    """(author, seq, op id) of every op in the relay's log."""
    with sqlite3.connect(relay.log_path.parent / "relay.db") as db:
        return [(bytes(a), int(s), bytes(o)) for a, s, o in
                db.execute("SELECT author, seq, op_id FROM ops")]


def check_logged_once(relay: RelayProcess) -> None:
    ops = relay_ops(relay)
    assert len({(a, s) for a, s, _ in ops}) == len({o for _, _, o in ops}) == len(ops)


def test_hybrid_edits_reach_the_other_home_and_the_relay(relay: RelayProcess,
                                                         tmp_path: Path) -> None:
    laptop, phone, tablet = make_homes(relay, tmp_path, "laptop", "phone", "tablet")
    ids = {laptop: device_id(laptop), phone: device_id(phone)}
    # No mDNS and no --peer: hybrid homes find each other by their presence
    # records on the relay (protocol 23.5).
    watchers = {h: Watcher(h, "--mode", "hybrid", "--no-mdns", "--listen", LOOPBACK)
                for h in (laptop, phone)}
    try:
        me = {h: w.listening() for h, w in watchers.items()}
        for h, w in watchers.items():
            check_listening(me[h])
            w.wait_event(lambda e: e["event"] == "online" and e["relay"] == relay.base_url)
        until(lambda: bool(peer_row(laptop, ids[phone]) and peer_row(phone, ids[laptop])),
              "the hybrid homes to connect")
        rows = {laptop: peer_row(laptop, ids[phone]), phone: peer_row(phone, ids[laptop])}
        check_row(rows[laptop], "phone", ids[phone], me[phone], {"dial", "inbound"})
        check_row(rows[phone], "laptop", ids[laptop], me[laptop], {"dial", "inbound"})
        assert "dial" in {r["found_by"] for r in rows.values() if r}, rows
        ok(laptop, "put", "notes", "milk", "2 l")
        until(lambda: notes(phone).get("milk") == "2 l", "the laptop's edit at the phone")
        watchers[laptop].wait_event(lambda e: e["event"] == "synced" and e["pushed"] >= 1)
        # The tablet only syncs with the relay: the edit is in the relay's log.
        succeeded(spawn(tablet, "sync").result())
        assert notes(tablet) == {"milk": "2 l"}
        ok(phone, "put", "notes", "eggs", "12")
        until(lambda: notes(laptop).get("eggs") == "12", "the phone's edit at the laptop")
        until(lambda: (succeeded(spawn(tablet, "sync").result()) is not None
                       and notes(tablet) == {"milk": "2 l", "eggs": "12"}),
              "the phone's edit in the relay's log")
    finally:
        results = [w.stop() for w in watchers.values()]
    for result in results:
        events = stopped_cleanly(result)
        assert events[-1]["pending"] == 0, events
    check_logged_once(relay)


def test_a_hybrid_home_carries_a_peer_only_homes_edits_to_the_relay(
        relay: RelayProcess, tmp_path: Path) -> None:
    laptop, phone, tablet = make_homes(relay, tmp_path, "laptop", "phone", "tablet")
    peer_only = Watcher(laptop, "--mode", "p2p", "--no-mdns", "--listen", LOOPBACK)
    watchers = [peer_only]
    try:
        address = peer_only.listening()["addrs"][0]
        hybrid = Watcher(phone, "--mode", "hybrid", "--no-mdns", "--listen", LOOPBACK,
                         "--peer", address)
        watchers.append(hybrid)
        hybrid.wait_event(lambda e: e["event"] == "online")
        ok(laptop, "put", "notes", "bread", "1")
        until(lambda: notes(phone).get("bread") == "1", "the laptop's edit at the phone")
        # The laptop never talks to the relay; the phone carries its op there.
        until(lambda: (succeeded(spawn(tablet, "sync").result()) is not None
                       and notes(tablet).get("bread") == "1"),
              "the laptop's edit in the relay's log, carried by the phone")
    finally:
        results = [w.stop() for w in watchers]
    laptop_events = stopped_cleanly(results[0])
    assert not {e["event"] for e in laptop_events} & {"online", "offline", "synced"}
    stopped_cleanly(results[1])
    check_logged_once(relay)


def test_option_errors_are_one_config_line(relay: RelayProcess, tmp_path: Path) -> None:
    (home,) = make_homes(relay, tmp_path, "laptop")
    addr = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"
    cases = {
        ("sync", "--mode", "p2p"): "use it with --watch",
        ("sync", "--mode", "hybrid", "--json"): "use it with --watch",
        ("sync", "--p2p"): "use it with --watch",
        ("sync", "--watch", "--p2p", "--mode", "relay"): "--p2p means --mode p2p",
        ("sync", "--watch", "--p2p", "--mode", "hybrid"): "--p2p means --mode p2p",
        ("sync", "--watch", "--peer", addr): "need --mode p2p or hybrid",
        ("sync", "--watch", "--mode", "relay", "--peer", addr): "need --mode p2p or hybrid",
        ("sync", "--watch", "--listen", LOOPBACK): "need --mode p2p or hybrid",
        ("sync", "--watch", "--no-mdns"): "need --mode p2p or hybrid",
    }
    for args, says in cases.items():
        line = fails(home, *args)
        assert line.startswith("error: ") and line.endswith(" [config]"), (args, line)
        assert says in line, (args, line)
    # Nothing was synced or started: the home holds no peer rows.
    assert peers_json(home) == {"self": None, "peers": []}


def test_a_peer_not_up_yet_is_dialled_again_quietly_and_ctrl_c_stops_the_watcher(
        relay: RelayProcess, tmp_path: Path) -> None:
    home, phone = make_homes(relay, tmp_path, "laptop", "phone")
    ids = {home: device_id(home), phone: device_id(phone)}
    # The phone is a device the laptop admits, but its watcher is not running yet.
    with held_port() as port:  # bound, never listening: every dial there is refused
        address = f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id(phone)}"
        watcher = Watcher(home, "--p2p", "--no-mdns", "--listen", LOOPBACK, "--peer", address)
        watchers = [watcher]
        try:
            watcher.listening()
            until(lambda: peers_json(home)["self"] is not None, "the watcher's own addresses")
            time.sleep(1.0)  # the first dial has failed by now: the watcher goes on
            assert watcher.proc.poll() is None and peers_json(home)["peers"] == []
            # The phone's watcher starts, on the address the laptop was given (it
            # dials nobody): the laptop's node dials it again (the addresses it
            # knows, every 30 s) and they connect.
            later = Watcher(phone, "--p2p", "--no-mdns", "--listen",
                            f"/ip4/127.0.0.1/tcp/{port}")
            watchers.append(later)
            assert later.listening()["addrs"] == [address]
            until(lambda: bool(peer_row(home, ids[phone])), "the laptop to dial the phone again",
                  timeout_s=75)
            check_row(peer_row(home, ids[phone]), "phone", ids[phone], later.listening(),
                      {"dial"})
        finally:
            results = [w.stop(signal.SIGINT) for w in watchers]
    # A peer that cannot be reached is normal on a network: no library log lines on
    # stderr (stopped_cleanly: stderr is empty), no error event.
    events = stopped_cleanly(results[0])
    assert [e["event"] for e in events] == ["peers", "stopped"], events
    stopped_cleanly(results[1])
    # ... and Ctrl-C during start-up (the home is open, the node not yet listening):
    # no traceback either.
    early = Watcher(home, "--p2p", "--listen", LOOPBACK)
    until(lambda: holds_open(early.proc.pid, home / "device.db"), "the watcher to open the home")
    result = early.stop(signal.SIGINT)
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 0:
        stopped_cleanly(result)
    else:  # interrupted before the watcher took over Ctrl-C: the CLI's (or click's) word
        assert result.returncode == 130, result
        assert result.stderr.strip() in ("interrupted", "aborted"), result


def test_only_sddsf_warnings_reach_a_p2p_watchers_stderr() -> None:
    """What the peer-to-peer watcher sets up before its node starts: libp2p calls the
    root ``logging.debug()`` on a connection, which used to install a root handler
    (``basicConfig``) that printed every library's warnings, tracebacks included
    (zeroconf's, about a network interface that is down). Only SDDSF's own
    warnings are shown, as ``warning: ...`` lines (everything with SDDSF_DEBUG=1)."""
    code = "\n".join([
        "import logging, sys",
        "from sddsf.cli.peer_cmds import log_to_stderr",
        "log_to_stderr()",
        "logging.debug('as libp2p does on each connection')",
        "try:",
        "    raise OSError(101, 'Network is unreachable')",
        "except OSError:",
        "    logging.getLogger('zeroconf').warning('Error with socket 19', exc_info=True)",
        "logging.getLogger('libp2p.swarm').error('Failed to open TCP stream')",
        "logging.warning('as libp2p does when a connection closes badly')",
        "logging.getLogger('sddsf.p2p').warning('op from peer %s refused: %s', 'ab12',",
        "                                       '[sig_invalid] \\x1b[2J')",
    ])
    for debug in (False, True):
        env = cli_env(extra={"SDDSF_DEBUG": "1"} if debug else None)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=60, check=True)
        own = "warning: op from peer ab12 refused: [sig_invalid] \\x1b[2J\n"
        if not debug:
            assert done.stderr == own, done.stderr
        else:
            assert own in done.stderr, done.stderr
            assert "warning: Error with socket 19" in done.stderr, done.stderr
            assert "Traceback" in done.stderr, done.stderr
