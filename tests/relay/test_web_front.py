"""``sddsf web`` (src/sddsf/cli/web_cmds.py) as a process in front of a real relay
process: the app's files on loopback, the relay's API on the same origin (HTTP
and the live WebSocket, whose close codes reach the page unchanged), nothing
outside the app's folder, no CORS needed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from livekit import RelayProcess, Relays, connect_outcome, relay_env, write_key_file

from sddsf.cli.web_cmds import default_dist

START_TIMEOUT_S = 20.0


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    started = Relays(tmp_path)
    key = write_key_file(tmp_path / "relay.key")
    try:
        yield started.start("--db", f"sqlite:///{tmp_path / 'relay.db'}",
                            env={"SDDSF_RELAY_KEY_FILE": str(key)})
    finally:
        started.stop_all()


def _dist(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>SDDSF</title>"
                                     "<script type=module src=/assets/app.js></script>")
    (dist / "assets" / "app.js").write_text("console.log('app')")
    (tmp_path / "secret.txt").write_text("outside the app")
    return dist


@pytest.fixture
def web(tmp_path: Path, relay: RelayProcess) -> Iterator[str]:
    env = {**relay_env(), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sddsf", "--home", str(tmp_path / "home"),
                             "web", "--relay", relay.base_url, "--dist", str(_dist(tmp_path)),
                             "--port", "0"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            if found:
                yield f"http://127.0.0.1:{found.group(1)}"
                break
            if proc.poll() is not None:
                break
        else:
            pytest.fail(f"sddsf web did not start: {line}")
        if proc.poll() is not None:
            pytest.fail(f"sddsf web exited: {line}{proc.stdout.read().decode()}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def test_web_serves_the_app_and_the_relay_on_one_origin(web: str) -> None:
    async with httpx.AsyncClient(base_url=web, timeout=10) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert "<title>SDDSF</title>" in page.text
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["x-content-type-options"] == "nosniff"
        asset = await http.get("/assets/app.js")
        assert asset.status_code == 200
        assert "javascript" in asset.headers["content-type"]
        # The relay's API, on the same origin.
        limits = await http.get("/v1/limits")
        assert limits.status_code == 200
        assert "max_request_bytes" in limits.json() or limits.json()
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        # The relay's own refusals come through as they are.
        refused = await http.post("/v1/auth/session", json={})
        assert refused.status_code == 400
        assert refused.json()["code"] == "malformed"
        # Nothing outside the app's folder, and no other method on files.
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/assets/../../secret.txt",
                     "/missing.js"):
            assert (await http.get(path)).status_code == 404, path
        assert (await http.post("/index.html")).status_code == 404


async def test_web_tunnels_the_live_channel_with_the_relays_close_codes(web: str) -> None:
    ws = web.replace("http://", "ws://") + "/v1/ws"
    # A bad ticket: the relay accepts then closes 4401; the page sees exactly that.
    assert await connect_outcome(ws + "?ticket=not-a-ticket") == ("close", 4401)
    assert await connect_outcome(ws) == ("close", 4401)


def test_web_without_a_built_app_says_how_to_build_it(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "sddsf", "web", "--relay", "http://127.0.0.1:9",
                        "--dist", str(tmp_path / "nothing")], capture_output=True, text=True,
                       env={**os.environ, **relay_env()}, timeout=60, check=False)
    assert r.returncode != 0
    assert "npm run build" in r.stderr, r.stderr
    assert "clients/web" in r.stderr, r.stderr


def test_web_serves_the_vite_app_of_clients_web_by_default() -> None:
    # The built web app (clients/web, Vite) of this checkout, as the README's commands build it.
    repo = Path(__file__).resolve().parents[2]
    assert default_dist() == repo / "clients" / "web" / "dist"
    assert (repo / "clients" / "web" / "package.json").is_file()
    r = subprocess.run([sys.executable, "-m", "sddsf", "web", "--help"], capture_output=True,
                       text=True, env={**os.environ, **relay_env()}, timeout=60, check=False)
    assert r.returncode == 0
    assert "clients/web" in r.stdout, r.stdout
