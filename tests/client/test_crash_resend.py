"""THREATS #6, the Complement-Crypto SIGKILL rule: kill -9 the client between persist
and send, restart, check that it re-sends the SAME op.

A child Python process opens a device home (made here with
``Device.create_account`` against a real ``sddsf relay serve`` subprocess), makes
an edit and is SIGKILLed at a chosen point:

* after ``flush()`` (the op and the chain head are persisted in the pending
  queue) and before any sync: the restarted device must push byte-for-byte the
  envelope that was pending, once, and keep chaining after it;
* in the middle of a sync, after the relay accepted the upload but before the
  device recorded the acknowledgement: the restart re-sends it, the relay
  answers ``duplicate`` at the same offset, and the log holds it once.

Third: a device restored from an old copy of its home re-uses a seq the relay
already holds; the relay refuses the new op (``chain_fork``), the client reports
it in ``SyncReport.rejected`` and the log stays consistent (what the client does
after that is asserted exactly, see the test).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clientkit  # noqa: F401 - puts tests/relay on sys.path for livekit and relaykit
import httpx
import pycrdt
import pytest
from livekit import RelayProcess, Relays, relay_env, write_key_file

from sddsf.client.device import Device, SyncReport
from sddsf.client.home import open_home
from sddsf.protocol import merkle
from sddsf.protocol.encoding import decode
from sddsf.protocol.envelope import OpEnvelope, decode_envelope

PASS = "correct horse battery staple"  # noqa: S105 - a test passphrase
WAIT_S = 30.0

# The child: open the home, set KEY = VALUE in the space "notes", then either
# flush (persist) and block before any sync ("flush"), or sync with an upload that
# blocks right after the relay answered ("upload"). It says where it is on
# stdout and blocks on stdin until it is killed.
CHILD = r"""
import asyncio, json, os, sys
from pathlib import Path

import httpx, pycrdt

from sddsf.client.device import Device


async def main() -> None:
    home, mode, key, value = sys.argv[1:5]
    secret = os.environ.get("SDDSF_PASSPHRASE")
    device = Device.open(Path(home), passphrase=(lambda: secret) if secret else None,
                         transport=httpx.AsyncHTTPTransport())
    space = device.space_by_name("notes")
    device.doc(space, "kv").get("kv", type=pycrdt.Map)[key] = value
    if mode == "flush":
        print("FLUSHED", device.flush(), device.pending_count(), flush=True)
    else:
        real = device.relay.upload

        async def upload_then_hang(space_id, envelopes, **kw):
            results, head = await real(space_id, envelopes, **kw)
            print("UPLOADED", json.dumps([[r.status, r.offset] for r in results]),
                  flush=True)
            sys.stdin.readline()  # the relay has the op; the device never records the ack
            raise SystemExit("not killed")

        device.relay.upload = upload_then_hang
        await device.sync()
    sys.stdin.readline()
    raise SystemExit("not killed")


asyncio.run(main())
"""


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    work = tmp_path_factory.mktemp("crash-relay")
    started = Relays(work)
    key = write_key_file(work / "relay.key")
    try:
        yield started.start("--db", f"sqlite:///{work / 'relay.db'}",
                            env={"SDDSF_RELAY_KEY_FILE": str(key)})
    finally:
        started.stop_all()


def transport() -> httpx.AsyncBaseTransport:
    return httpx.AsyncHTTPTransport()  # real loopback HTTP, no proxies from the environment


def secret_of(passphrase: str | None) -> Any:
    return (lambda: passphrase) if passphrase else None


async def new_home(relay: RelayProcess, home: Path, *,
                   passphrase: str | None = None) -> tuple[bytes, bytes, bytes]:
    """An account whose device lives in ``home`` with a synced space "notes" holding
    a = 1. Returns (account secret, device id, space id); the device is closed."""
    device, secret = await Device.create_account(
        home, relay.base_url, "laptop", passphrase=secret_of(passphrase),
        insecure_plaintext=passphrase is None, transport=transport())
    space = await device.create_space("notes")
    kv(device, space)["a"] = "1"
    report = await device.sync()
    assert (report.pushed, report.rejected) == (2, [])
    device_id = device.device_id
    await device.close()
    return secret, device_id, space


def kv(device: Device, space: bytes) -> Any:
    return device.doc(space, "kv").get("kv", type=pycrdt.Map)


def open_device(home: Path, passphrase: str | None = None) -> Device:
    return Device.open(home, passphrase=secret_of(passphrase), transport=transport())


class Child:
    """The child process, its stdout read with a deadline; always killed at the end."""

    def __init__(self, script: Path, home: Path, mode: str, key: str, value: str,
                 passphrase: str | None) -> None:
        env = relay_env({"SDDSF_PASSPHRASE": passphrase} if passphrase else None)
        if passphrase is None:
            env.pop("SDDSF_PASSPHRASE", None)
        self.stderr_path = script.with_suffix(f".{mode}.stderr")
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), str(home), mode, key, value], env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        self._buffer = b""

    def wait_for(self, marker: str) -> str:
        """The first stdout line starting with ``marker`` (bounded wait)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + WAIT_S
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                complete = self._buffer[:self._buffer.rfind(b"\n") + 1]
                for line in complete.decode().splitlines():
                    if line.startswith(marker):
                        return line
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    break
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                self._buffer += chunk
        raise AssertionError(f"child never printed {marker!r}; stdout {self._buffer!r}, "
                             f"stderr {self.stderr_path.read_text(errors='replace')}")

    def kill9(self) -> None:
        assert self.proc.poll() is None, "the child ended by itself"
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=WAIT_S) == -signal.SIGKILL

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT_S)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def child_script(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


def pending_rows(home: Path, passphrase: str | None) -> list[tuple[bytes, bytes]]:
    """The pending queue, read straight from the store (works while the child lives)."""
    store, _ = open_home(home, passphrase=secret_of(passphrase))
    try:
        return store.scan("pending")
    finally:
        store.close()


async def relay_log(device: Device, space: bytes) -> list[tuple[int, bytes, bytes]]:
    """Every (offset, leaf hash, envelope) the relay serves for the space, checked
    against its leaf hashes."""
    log: list[tuple[int, bytes, bytes]] = []
    for _ in range(100):
        page, _ = await device.relay.pull(space, after=len(log) - 1, limit=500)
        if not page:
            break
        for op in page:
            assert op.offset == len(log) and op.envelope is not None
            assert merkle.leaf_hash(op.envelope) == op.leaf_hash
            log.append((op.offset, op.leaf_hash, op.envelope))
    return log


def assert_no_fork(log: list[tuple[int, bytes, bytes]]) -> dict[tuple[bytes, int], bytes]:
    """One op per (author, seq), no repeated leaf, every chain linked without gaps.
    Returns {(author, seq): envelope}."""
    envs = [decode_envelope(raw) for _, _, raw in log]
    assert len({leaf for _, leaf, _ in log}) == len(log), "a leaf is in the log twice"
    by_key: dict[tuple[bytes, int], OpEnvelope] = {}
    for env in envs:
        key = (env.header.author, env.header.seq)
        assert key not in by_key, f"two ops at seq {key[1]} of one author"
        by_key[key] = env
    for (author, seq), env in by_key.items():
        if seq > 1:
            assert by_key[(author, seq - 1)].op_id == env.header.prev, "chain broken"
    return {k: e.raw for k, e in by_key.items()}


async def check_fresh_device(relay: RelayProcess, home: Path, secret: bytes, space: bytes,
                             expected: dict[str, str]) -> None:
    """A device that never wrote to the space recovers, verifies the whole log
    (sync raises on any inconsistency) and sees ``expected``."""
    fresh = await Device.recover(home, relay.base_url, secret, "fresh", passphrase=None,
                                 insecure_plaintext=True, transport=transport())
    try:
        report = await fresh.sync()
        assert report.rejected == []
        assert dict(kv(fresh, space)) == expected
    finally:
        await fresh.close()


async def test_sigkill_after_persist_before_send_resends_the_same_op(
        relay: RelayProcess, tmp_path: Path, child_script: Path) -> None:
    home = tmp_path / "laptop"
    secret, me, space = await new_home(relay, home, passphrase=PASS)
    child = Child(child_script, home, "flush", "milk", "2 l", PASS)
    try:
        assert child.wait_for("FLUSHED") == "FLUSHED 1 1"
        # captured while the child is alive, before the kill
        before = pending_rows(home, PASS)
        child.kill9()
    finally:
        child.close()
    assert len(before) == 1
    key, pending = before[0]
    env = decode_envelope(pending)
    seq = env.header.seq
    assert key == space + seq.to_bytes(8, "big")
    assert (env.header.author, env.header.space, seq) == (me, space, 3)

    device = open_device(home, PASS)
    try:
        # the kill lost nothing: same pending bytes, chain head already on that op
        assert device.store.scan("pending") == before
        assert decode(device.store.get("mine", space) or b"") == [seq, env.op_id]
        assert dict(kv(device, space)) == {"a": "1", "milk": "2 l"}
        log = await relay_log(device, space)
        assert len(log) == 2 and all(raw != pending for *_, raw in log)  # never sent

        # a new edit after the restart chains after the pending op
        kv(device, space)["eggs"] = "12"
        assert device.flush() == 1 and device.pending_count() == 2
        report = await device.sync()
        assert (report.pushed, report.rejected) == (2, [])
        assert device.pending_count() == 0

        log = await relay_log(device, space)
        ops = assert_no_fork(log)
        assert len(log) == 4
        assert ops[(me, seq)] == pending  # byte-identical to what was pending at the kill
        assert [raw for *_, raw in log].count(pending) == 1
        assert decode_envelope(ops[(me, seq + 1)]).header.prev == env.op_id
        local = [raw for _, raw in device.store.scan("op", space)]
        assert local == [raw for *_, raw in log] and local.count(pending) == 1
    finally:
        await device.close()
    await check_fresh_device(relay, tmp_path / "fresh", secret, space,
                             {"a": "1", "milk": "2 l", "eggs": "12"})


async def test_sigkill_mid_sync_after_upload_resend_is_a_duplicate(
        relay: RelayProcess, tmp_path: Path, child_script: Path) -> None:
    home = tmp_path / "laptop"
    secret, me, space = await new_home(relay, home)
    child = Child(child_script, home, "upload", "milk", "2 l", None)
    try:
        line = child.wait_for("UPLOADED")
        before = pending_rows(home, None)
        child.kill9()
    finally:
        child.close()
    assert json.loads(line.split(" ", 1)[1]) == [["accepted", 2]]
    assert len(before) == 1
    pending = before[0][1]
    seq = decode_envelope(pending).header.seq

    device = open_device(home)
    try:
        # the relay has the op, the device does not know: still pending, no ack
        assert device.store.scan("pending") == before
        assert device.store.get("acked", space + (2).to_bytes(8, "big")) is None
        assert device.store.count("acked", space) == 2  # offsets 0 and 1 only
        log = await relay_log(device, space)
        assert len(log) == 3 and log[2][2] == pending

        statuses: list[tuple[str, int | None]] = []
        upload = device.relay.upload

        async def spy(space_id: bytes, envelopes: Any, **kw: Any) -> Any:
            results, head = await upload(space_id, envelopes, **kw)
            statuses.extend((r.status, r.offset) for r in results)
            return results, head

        device.relay.upload = spy  # type: ignore[method-assign]
        report = await device.sync()
        assert statuses == [("duplicate", 2)]  # the same op, at the offset it already has
        assert (report.pushed, report.rejected) == (1, [])
        assert device.pending_count() == 0
        assert device.store.get("acked", space + (2).to_bytes(8, "big")) == log[2][1]

        log = await relay_log(device, space)
        ops = assert_no_fork(log)
        assert len(log) == 3 and ops[(me, seq)] == pending
        assert [raw for _, raw in device.store.scan("op", space)] == [r for *_, r in log]
        assert dict(kv(device, space)) == {"a": "1", "milk": "2 l"}
        report = await device.sync()  # and nothing left to do
        assert (report.pushed, report.pulled, report.rejected) == (0, 0, [])
    finally:
        await device.close()
    await check_fresh_device(relay, tmp_path / "fresh", secret, space,
                             {"a": "1", "milk": "2 l"})


async def test_device_restored_from_an_old_copy_keeps_its_edit_after_chain_fork(
        relay: RelayProcess, tmp_path: Path) -> None:
    home, old = tmp_path / "laptop", tmp_path / "laptop-backup"
    secret, me, space = await new_home(relay, home)
    shutil.copytree(home, old)  # a backup: chain head at seq 2

    device = open_device(home)
    kv(device, space)["x"] = "made after the backup"
    report = await device.sync()
    assert (report.pushed, report.rejected) == (1, [])
    accepted = (await relay_log(device, space))[2][2]
    await device.close()
    assert decode_envelope(accepted).header.seq == 3

    restored = open_device(old)
    try:
        assert decode(restored.store.get("mine", space) or b"")[0] == 2  # stale head
        kv(restored, space)["y"] = "made on the restored copy"
        report = await restored.sync()
        assert isinstance(report, SyncReport)
        # the forked op is refused and reported, but the edit is not lost: the
        # copy adopts the log's chain head (op 3 from the original) and seals
        # the same edit again as seq 4
        assert [code for code, _ in report.rejected] == ["chain_fork"]
        assert "seq 3" in report.rejected[0][1]
        assert report.pushed == 1 and report.applied == 1
        assert restored.pending_count() == 0
        [(failed_key, forked)] = restored.store.scan("failed")
        assert failed_key == space + (3).to_bytes(8, "big")
        assert decode_envelope(forked).header.seq == 3 and forked != accepted

        # the log stays consistent: one op per (me, seq), the first seq 3 kept
        log = await relay_log(restored, space)
        ops = assert_no_fork(log)
        assert len(log) == 4 and ops[(me, 3)] == accepted
        assert forked not in [raw for *_, raw in log]
        assert decode_envelope(ops[(me, 4)]).header.prev == decode_envelope(accepted).op_id
        assert dict(kv(restored, space)) == {"a": "1", "x": "made after the backup",
                                             "y": "made on the restored copy"}
        kv(restored, space)["z"] = "later"
        report = await restored.sync()
        assert (report.pushed, report.rejected) == (1, [])
        assert len(await relay_log(restored, space)) == 5
    finally:
        await restored.close()

    # every other view is the log's: the original device and a fresh one
    device = open_device(home)
    try:
        report = await device.sync()
        assert (report.pushed, report.pulled, report.rejected) == (0, 2, [])
        assert dict(kv(device, space)) == {"a": "1", "x": "made after the backup",
                                           "y": "made on the restored copy", "z": "later"}
    finally:
        await device.close()
    await check_fresh_device(relay, tmp_path / "fresh", secret, space,
                             {"a": "1", "x": "made after the backup",
                              "y": "made on the restored copy", "z": "later"})


async def test_copy_taken_after_persist_resends_the_same_op_no_fork(
        relay: RelayProcess, tmp_path: Path) -> None:
    """The other reading of "restored before the edit was synced": the copy holds the
    persisted pending op, so it re-sends the same bytes (duplicate) and its next op
    links to it. Persisting before sending is what makes this safe."""
    home, old = tmp_path / "laptop", tmp_path / "laptop-backup"
    secret, me, space = await new_home(relay, home)
    device = open_device(home)
    kv(device, space)["x"] = "persisted, not sent"
    assert device.flush() == 1
    await device.close()
    shutil.copytree(home, old)

    device = open_device(home)
    report = await device.sync()
    assert (report.pushed, report.rejected) == (1, [])
    await device.close()

    restored = open_device(old)
    try:
        kv(restored, space)["y"] = "after the restore"
        report = await restored.sync()
        assert (report.pushed, report.rejected) == (2, [])  # a duplicate and a new op
        log = await relay_log(restored, space)
        ops = assert_no_fork(log)
        assert len(log) == 4 and {seq for (a, seq) in ops if a == me} == {1, 2, 3, 4}
        assert restored.store.count("failed") == 0
        assert dict(kv(restored, space)) == {"a": "1", "x": "persisted, not sent",
                                             "y": "after the restore"}
    finally:
        await restored.close()
    await check_fresh_device(relay, tmp_path / "fresh", secret, space,
                             {"a": "1", "x": "persisted, not sent", "y": "after the restore"})
