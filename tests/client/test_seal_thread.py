"""``Device.flush`` seals on a thread of its own (``SealThread``): the memory a
seal allocates and frees then stays out of the heap of the thread that types
into the document (docs/performance.md, "Why later edits were slower"). What
it seals is unchanged, an error while sealing reaches the caller as before, a
flush inside a store batch still refuses instead of waiting for itself, an
interrupt lets a running seal end first, and closing the device ends the
thread."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from clientkit import InProcessRelay
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sddsf.client.device import Device
from sddsf.client.engine import outbox as outbox_module
from sddsf.client.engine.sealthread import SealThread
from sddsf.errors import UsageError
from sddsf.protocol.envelope import decode_envelope, open_op
from sddsf.protocol.payload import Edit, decode_payload

_CHARS = st.text(alphabet="abcdefghij \n", min_size=1, max_size=12)
#: One edit: delete (position and length as fractions of the text) then insert.
_EDIT = st.tuples(st.floats(0, 1), st.floats(0, 0.5), st.one_of(st.just(""), _CHARS))
_WINDOWS = st.lists(st.lists(_EDIT, min_size=1, max_size=8), min_size=1, max_size=4)


def _apply(text: pycrdt.Text, edit: tuple[float, float, str]) -> None:
    at, cut, insert = edit
    length = len(str(text))
    pos = int(at * length)
    delete = int(cut * (length - pos))
    if delete:
        del text[pos:pos + delete]
    if insert:
        text.insert(pos, insert)


def _sealed_text(device: Device, space: bytes, name: str) -> str:
    """The text of document ``name`` rebuilt from this device's pending ops
    alone (decrypted with the space's keys), in a document of its own."""
    keys = device.engine.keyring.keys_cached(space)
    rebuilt: pycrdt.Doc[Any] = pycrdt.Doc()
    for _, raw in device.engine.store.scan("pending", space):
        env = decode_envelope(raw)
        payload = decode_payload(open_op(env, keys[env.header.epoch]))
        assert isinstance(payload, Edit)
        if payload.name == name:
            for update in payload.updates:
                rebuilt.apply_update(update)
    return str(rebuilt.get("t", type=pycrdt.Text))


async def test_flush_seals_on_its_own_thread_what_was_typed(relay: InProcessRelay,
                                                             tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             ) -> None:
    device, _ = await relay.new_account(tmp_path / "laptop")
    space = await device.create_space("notes")
    sealing: list[threading.Thread] = []
    seal_op = outbox_module.seal_op

    def recorded(*args: Any, **kwargs: Any) -> Any:
        sealing.append(threading.current_thread())
        return seal_op(*args, **kwargs)

    monkeypatch.setattr(outbox_module, "seal_op", recorded)
    counter = iter(range(1 << 30))

    @settings(max_examples=30, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(windows=_WINDOWS)
    def typed_then_flushed(windows: list[list[tuple[float, float, str]]]) -> None:
        name = f"d{next(counter)}"  # a new, empty document for each example
        doc = device.doc(space, name)
        text = doc.get("t", type=pycrdt.Text)
        for window in windows:
            for edit in window:
                with doc.transaction():
                    _apply(text, edit)
            device.flush()
            assert _sealed_text(device, space, name) == str(text)

    typed_then_flushed()
    assert sealing and all(t is not threading.current_thread() for t in sealing)
    assert len({t.ident for t in sealing}) == 1  # one thread, kept between flushes
    await device.close()
    assert not sealing[0].is_alive()


async def test_an_error_while_sealing_reaches_the_caller(relay: InProcessRelay,
                                                         tmp_path: Path) -> None:
    device, _ = await relay.new_account(tmp_path / "laptop")
    space = await device.create_space("notes")
    device.max_edit = 1 << 20
    queued = device.pending_count()
    doc = device.doc(space, "big")
    doc.get("t", type=pycrdt.Text).insert(0, "x" * (2 << 20))
    with pytest.raises(UsageError, match="make smaller edits"):
        device.flush()
    assert device.pending_count() == queued  # nothing of it was queued
    # The refused edit is undone on this device: the document is opened anew.
    assert str(device.doc(space, "big").get("t", type=pycrdt.Text)) == ""
    await device.close()


async def test_a_flush_inside_a_store_batch_refuses_instead_of_waiting(
        relay: InProcessRelay, tmp_path: Path) -> None:
    device, _ = await relay.new_account(tmp_path / "laptop")
    space = await device.create_space("notes")
    device.doc(space, "notes").get("t", type=pycrdt.Text).insert(0, "hello")
    outcome: list[BaseException | None] = []

    def flush_in_batch() -> None:
        try:
            with device.engine.store.batch():
                device.flush()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    # On a thread of the test's: had the seal thread waited for this batch,
    # the test would report it rather than hang.
    caller = threading.Thread(target=flush_in_batch, daemon=True)
    caller.start()
    caller.join(60)
    assert outcome and isinstance(outcome[0], UsageError)
    assert "do not nest" in str(outcome[0])
    assert device.flush() == 1  # the edit stayed buffered
    await device.close()


def test_an_interrupt_while_sealing_is_raised_once_the_seal_ended() -> None:
    sealer = SealThread()
    interrupted = threading.Event()
    ended: list[bool] = []

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.set()
        raise KeyboardInterrupt

    def seal() -> int:
        os.kill(os.getpid(), signal.SIGINT)  # as a Ctrl-C while the caller waits
        interrupted.wait(30)
        time.sleep(0.2)  # still sealing after the caller saw the interrupt
        ended.append(True)
        return 1

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with pytest.raises(KeyboardInterrupt):
            sealer.run(seal)
        assert interrupted.is_set() and ended == [True]
        assert sealer.run(lambda: 2) == 2  # the thread serves the next flush
    finally:
        signal.signal(signal.SIGINT, previous)
        sealer.close()
