"""``sddsf bridge`` (issue 14): a stock Yjs client edits an SDDSF document.

A real relay process on loopback, two devices of one account (laptop: the
``sddsf`` CLI; tablet: recovered from the phrase, used in process), the
``sddsf bridge`` command running for the laptop, and a real Node client using
the ``y-websocket`` provider (tests/node/bridge). Its edit reaches the tablet
through the relay, the relay's database holds no plaintext of it, the
tablet's edit reaches the Node client, and connections without the token (or
to another room) are closed before anything of the document is sent.

Needs ``npm ci`` in tests/node/bridge: skipped without it, a failure under
``SDDSF_REQUIRE_INTEROP=1`` (as CI sets).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycrdt
import pytest
import test_cli_homes as homes
from livekit import RelayProcess, Relays
from test_cli_homes import PASS, Running, fails, ok, spawn, succeeded
from test_cli_watch import Lines
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sddsf.cli import bridge_cmds
from sddsf.client.bridge import (
    CLOSE_BAD_MESSAGE,
    CLOSE_BAD_TOKEN,
    CLOSE_WRONG_ROOM,
    DEFAULT_PORT,
    BridgeToken,
    YjsBridgeServer,
    check_host,
)
from sddsf.client.device import Device
from sddsf.errors import UsageError

NODE_CLIENT = Path(__file__).resolve().parents[1] / "node" / "bridge"
#: Unique text, so that finding it in the relay's files means plaintext leaked.
FROM_EDITOR = "typed in a stock Yjs editor 6c1f0e"
FROM_TABLET = "and answered from the tablet 93b2d4"
WAIT_S = 60.0


def _node_client() -> Path:
    """The Node client's folder, installed; else skip (fail under SDDSF_REQUIRE_INTEROP=1)."""
    if not (NODE_CLIENT / "node_modules" / "y-websocket").is_dir():
        reason = ("tests/node/bridge has no node_modules: run `npm ci` there to test the "
                  "bridge with a real y-websocket client")
        if os.environ.get("SDDSF_REQUIRE_INTEROP") == "1":
            pytest.fail(reason + " (SDDSF_REQUIRE_INTEROP=1 makes this a failure)")
        pytest.skip(reason)
    return NODE_CLIENT


def _node_path() -> str:
    node = shutil.which("node")
    assert node, "tests/node/bridge is installed but node is not on PATH"
    return node


@dataclass
class Bridged:
    """The running setup every test of this module shares."""

    relay: RelayProcess
    relay_dir: Path
    laptop: Path
    tablet: Path
    bridge: Running
    out: Lines
    listening: dict[str, Any]

    def relay_files(self) -> bytes:
        """Every byte of the relay's SQLite database (main file, WAL, journal)."""
        return b"".join(p.read_bytes() for p in sorted(self.relay_dir.glob("relay.db*")))

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in map(json.loads, list(self.out.lines)) if e["event"] == kind]


@pytest.fixture(scope="module")
def bridged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridged]:
    node = _node_client()
    work = tmp_path_factory.mktemp("bridge")
    relays = Relays(work)
    args, env = homes.relay_args(work)
    try:
        relay = relays.start(*args, env=env)
        laptop, tablet, phrase = work / "laptop", work / "tablet", work / "phrase"
        ok(laptop, "init", "--relay", relay.base_url, "--name", "laptop", "--phrase-out",
           str(phrase), "--insecure-plaintext-key")
        ok(laptop, "space", "create", "notes")
        ok(laptop, "sync")
        ok(tablet, "recover", "--relay", relay.base_url, "--phrase-file", str(phrase),
           "--name", "tablet", passphrase=PASS)
        bridge = spawn(laptop, "bridge", "notes", "page", "--port", "0", "--json")
        try:
            out = Lines(bridge)
            listening = json.loads(out.wait_for(lambda ln: '"listening"' in ln))
            yield Bridged(relay, work, laptop, tablet, bridge, out, listening)
        finally:
            bridge.proc.send_signal(signal.SIGINT)
            result = bridge.result()
        succeeded(result)
        out.thread.join(timeout=10)
        assert any('"stopped"' in ln for ln in out.lines + result.stdout.splitlines())
        assert node.is_dir()
    finally:
        relays.stop_all()


def _node(bridged: Bridged, token: str, insert: str, wait_for: str) -> subprocess.Popen[str]:
    info = bridged.listening
    argv = [_node_path(), "client.mjs", info["server"], info["room"], token, insert, wait_for]
    return subprocess.Popen(argv, cwd=NODE_CLIENT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def _tablet_text_until(tablet: Device, space_id: bytes, wanted: str) -> str:
    """Sync the tablet until the page's text holds ``wanted`` (or WAIT_S passed)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        await tablet.sync()
        text = str(tablet.doc(space_id, "page").get("text", type=pycrdt.Text))
        if wanted in text or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.2)


async def test_a_stock_yjs_client_edits_the_document_end_to_end_encrypted(
        bridged: Bridged) -> None:
    # The bridge prints the whole URL once, and the parts a provider takes.
    info = bridged.listening
    assert info["url"] == f"{info['server']}/page?token={info['token']}"
    assert info["server"].startswith("ws://127.0.0.1:") and info["room"] == "page"

    editor = _node(bridged, info["token"], FROM_EDITOR, FROM_TABLET)
    try:
        tablet = Device.open(bridged.tablet, passphrase=lambda: PASS)
        try:
            space_id = tablet.space_by_name("notes")
            # The editor's insert reaches the other device through the relay...
            assert FROM_EDITOR in await _tablet_text_until(tablet, space_id, FROM_EDITOR)
            # ...encrypted: the relay's database never held its plaintext.
            assert FROM_EDITOR.encode() not in bridged.relay_files()
            # An edit on the other device reaches the editor, live.
            text = tablet.doc(space_id, "page").get("text", type=pycrdt.Text)
            text += FROM_TABLET
            report = await tablet.sync()
            assert report.pushed == 1
        finally:
            await tablet.close()
        out, err = editor.communicate(timeout=WAIT_S + 30)
    finally:
        if editor.poll() is None:
            editor.kill()
            editor.communicate()
    assert editor.returncode == 0, (out, err)
    seen = [json.loads(ln) for ln in out.splitlines() if '"seen"' in ln]
    assert seen and seen[0]["text"] == FROM_EDITOR + FROM_TABLET, out
    assert FROM_TABLET.encode() not in bridged.relay_files()
    # The laptop sent the editor's edit as an op of its own and received the tablet's.
    synced = bridged.events("synced")
    assert any(e["pushed"] >= 1 for e in synced), bridged.out.lines
    assert any(e["applied"] >= 1 for e in synced), bridged.out.lines


async def _outcome(url: str) -> tuple[int | None, list[bytes | str]]:
    """How the bridge ends a connection to ``url``: its close code and every message sent."""
    received: list[bytes | str] = []
    async with connect(url, open_timeout=10) as ws:
        try:
            while len(received) < 3:
                received.append(await asyncio.wait_for(ws.recv(), 10))
        except ConnectionClosed:
            pass
        return ws.close_code, received


async def test_connections_without_the_token_are_refused_before_any_content(
        bridged: Bridged) -> None:
    server, token = bridged.listening["server"], bridged.listening["token"]
    wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for url in (f"{server}/page", f"{server}/page?token=", f"{server}/page?token={wrong}",
                f"{server}/page?token={token}&token={wrong}", f"{server}/?token={wrong}"):
        assert await _outcome(url) == (CLOSE_BAD_TOKEN, []), url
    # The right token, another room: refused too (nothing served from an empty room).
    assert await _outcome(f"{server}/other?token={token}") == (CLOSE_WRONG_ROOM, [])
    # The control: with the token, the room answers (y-websocket sync step 1 first).
    async with connect(f"{server}/page?token={token}", open_timeout=10) as ws:
        first = await asyncio.wait_for(ws.recv(), 10)
    assert isinstance(first, bytes) and first[:2] == b"\x00\x00"
    # What is not the y-websocket protocol closes that connection (1007), not the bridge.
    for junk in ("a text frame", b"\x00\x02\xff\xff\xff\xff\xff"):
        async with connect(f"{server}/page?token={token}", open_timeout=10) as ws:
            await ws.send(junk)
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == CLOSE_BAD_MESSAGE, junk

    # A stock client with a wrong token is closed with the policy code, never synced.
    editor = _node(bridged, wrong, "never", "never")
    try:
        deadline = time.monotonic() + WAIT_S
        lines: list[str] = []
        assert editor.stdout is not None
        while not any('"closed"' in ln for ln in lines) and time.monotonic() < deadline:
            lines.append(editor.stdout.readline())
    finally:
        editor.kill()
        editor.communicate()
    closed = [json.loads(ln) for ln in lines if '"closed"' in ln]
    assert closed and closed[0]["code"] == CLOSE_BAD_TOKEN, lines
    assert not any('"synced"' in ln or '"text"' in ln for ln in lines), lines
    assert any("no or wrong token" in e["message"] for e in bridged.events("client"))


def test_the_bridge_listens_on_loopback_only(tmp_path: Path) -> None:
    # Refused before the home is even opened (this one does not exist).
    home = tmp_path / "home"
    line = fails(home, "bridge", "notes", "page", "--host", "0.0.0.0")  # noqa: S104
    assert "not a loopback address" in line and "--allow-remote" in line
    assert "reserved" in fails(home, "bridge", "notes", "_meta", "--port", "0")
    for host in ("127.0.0.1", "127.8.9.10", "::1", "localhost"):
        check_host(host, allow_remote=False)
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.com", "127.0.0.1.example.com"):  # noqa: S104
        with pytest.raises(UsageError, match="not a loopback address"):
            check_host(host, allow_remote=False)
        check_host(host, allow_remote=True)


def test_only_the_token_and_the_room_admit_a_connection() -> None:
    server = YjsBridgeServer(pycrdt.Doc(), "my notes/page", token=BridgeToken("s3cret"))
    assert server.refusal("/my%20notes%2Fpage?token=s3cret") is None
    assert server.refusal("/my notes/page?token=s3cret") is None  # as y-websocket sends it
    for path in ("/my%20notes%2Fpage", "/my%20notes%2Fpage?token=s3cre",
                 "/my%20notes%2Fpage?token=s3cret&token=s3cret", "/?token=x", "",
                 "/my%20notes%2Fpage?token=%ff"):
        refused = server.refusal(path)
        assert refused is not None and refused[0] == CLOSE_BAD_TOKEN, path
    assert server.refusal("/other?token=s3cret") == (
        CLOSE_WRONG_ROOM, "this bridge serves one document: use its room name")
    assert "s3cret" not in repr(server.token)
    assert bridge_cmds._DEFAULT_PORT == DEFAULT_PORT  # the CLI's copy of the default
    assert len(BridgeToken().value) >= 43  # 32 random bytes, base64url
