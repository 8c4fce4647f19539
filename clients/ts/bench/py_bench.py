"""The Python side of the browser benchmark (clients/ts/bench/browser.ts).

Driven by the Node script, one command per run, against a real ``sddsf relay
serve`` process; every command prints one JSON object on stdout. Device A (the
home ``WORK/a``) never writes a snapshot or an acknowledgement on its own
(``snapshot_every = ack_every = 0``), so the relay keeps the whole history and
a new device replays it until the ``snapshot`` command writes one.

* ``setup WORK RELAY_URL EDITS DEBOUNCE``: create the account and device A,
  a space ``trace``, and type the automerge-paper trace (``SDDSF_TRACE``, else
  the trace bench's default path) exactly as ``bench/trace_sync.py`` does:
  one transaction per edit, one op every DEBOUNCE edits, a sync every 200 ops.
  Writes A's final text to ``WORK/expected.txt``; prints the op count.
* ``pair WORK CODE_FILE``: A shows a pairing code (written to CODE_FILE),
  pairs the device that joins with it (words accepted) and opens a key epoch
  of the space that includes it. Prints the words and the new device's id.
* ``snapshot WORK``: A syncs and writes a snapshot covering the whole log.
* ``pull WORK MODE REPEAT``: a new Python device (``Device.add_local``; MODE
  ``replay`` or ``snapshot``); REPEAT fresh copies of it (new homes) each time
  their first ``sync()`` and check their text against A's. Prints the times in ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pycrdt

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))

from trace_sync import TRACE, apply_edit, load  # noqa: E402

from sddsf.client.device import Device  # noqa: E402
from sddsf.client.engine.common import store_kind  # noqa: E402
from sddsf.client.engine.identity import new_home  # noqa: E402
from sddsf.client.pairing import PairingCheck, PairingInvite, add_device  # noqa: E402

SPACE = "trace"


def _emit(value: dict[str, Any]) -> None:
    print(json.dumps(value), flush=True)


def _open(work: Path) -> Device:
    a = Device.open(work / "a", passphrase=None)
    a.snapshot_every = 0
    a.ack_every = 0
    return a


async def setup(work: Path, relay_url: str, n: int, debounce: int) -> None:
    trace = load(Path(os.environ.get("SDDSF_TRACE", str(TRACE))), n)
    edits, end = trace.edits, trace.end
    a, _ = await Device.create_account(work / "a", relay_url, "a", passphrase=None,
                                       insecure_plaintext=True)
    a.snapshot_every = 0
    a.ack_every = 0
    try:
        space = await a.create_space(SPACE)
        doc = a.doc(space, "text")
        text = doc.get("t", type=pycrdt.Text)
        ops = 0
        start = time.perf_counter()
        for i, edit in enumerate(edits, 1):  # as bench/trace_sync.py types them
            with doc.transaction():
                apply_edit(text, edit)
            if i % debounce == 0:
                ops += a.flush()
                if ops % 200 == 0:
                    await a.sync()
        ops += a.flush()
        await a.sync()
        typed_s = time.perf_counter() - start
        result = str(text)
        (work / "expected.txt").write_text(result, encoding="utf-8")
        _emit({"space": space.hex(), "ops": ops, "edits": len(edits),
               "log_size": a.verified_size(space), "state_bytes": len(doc.get_update()),
               "text_chars": len(result),
               "matches_end": result == end if trace.complete else None, "typed_s": typed_s})
    finally:
        await a.close()


async def pair(work: Path, code_file: Path) -> None:
    a = _open(work)
    seen: list[str] = []

    def show(invite: PairingInvite) -> None:
        code_file.write_text(invite.code + "\n", encoding="utf-8")

    def confirm(check: PairingCheck) -> bool:
        seen.extend(check.words)
        return True

    try:
        await a.sync()
        new_id, _ = await add_device(a, show=show, confirm_sas=confirm, timeout_s=120)
        _emit({"device_id": new_id.hex(), "words": seen})
    finally:
        await a.close()


async def snapshot(work: Path) -> None:
    a = _open(work)
    try:
        await a.sync()
        space = a.space_by_name(SPACE)
        _emit({"size": await a.snapshot(space)})
    finally:
        await a.close()


async def pull(work: Path, mode: str, repeat: int) -> None:
    expected = (work / "expected.txt").read_text(encoding="utf-8")
    a = _open(work)
    times: list[float] = []
    try:
        space = a.space_by_name(SPACE)
        # One new device (the registry allows 16 additions a day); each run is a
        # fresh copy of it (a new home with its keys, the relay key pinned and the registry read),
        # so every timed sync starts from nothing.
        first = await Device.add_local(a, work / f"py-{mode}", f"py-{mode}", passphrase=None,
                                       insecure_plaintext=True)
        keys = first.keys
        await first.close()
        for i in range(repeat):
            home = work / f"py-{mode}-{i}"
            store = new_home(home, keys, f"py-{mode}", a.account, a.relay_url, None, True)
            dev = Device(store, store_kind(home))
            await dev.pin_relay()  # as Device.add_local leaves a new device (and pairing a browser)
            await dev.refresh_registry()
            dev.use_snapshots = mode == "snapshot"
            dev.ack_every = 0
            start = time.perf_counter()
            report = await dev.sync()
            times.append((time.perf_counter() - start) * 1000)
            if report.snapshots_loaded != (mode == "snapshot"):
                raise SystemExit(f"py_bench: a {mode} start loaded "
                                 f"{report.snapshots_loaded} snapshots")
            if str(dev.doc(space, "text").get("t", type=pycrdt.Text)) != expected:
                raise SystemExit(f"py_bench: the {mode} device's text differs from device A's")
            await dev.close()
        _emit({"mode": mode, "ms": times})
    finally:
        await a.close()


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "setup":
        asyncio.run(setup(Path(args[0]), args[1], int(args[2]), int(args[3])))
    elif command == "pair":
        asyncio.run(pair(Path(args[0]), Path(args[1])))
    elif command == "snapshot":
        asyncio.run(snapshot(Path(args[0])))
    elif command == "pull":
        asyncio.run(pull(Path(args[0]), args[1], int(args[2])))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
