"""Someone in the middle who knows the pairing code grinds SPAKE2 messages for
matching words (review finding P2 in docs/reliability.md), against a real
``sddsf relay serve`` process.

Without a commitment, the middle waits for both honest SPAKE2 messages, then
tries fresh messages of its own on each side until the two sides' words agree
(a birthday search: 2 of 5 words after about 900 tries per side; all 55 bits
within reach of many cores in 600 s). With pairing version 2 the joiner commits
to its message first (``h = tagged_hash(PAIRING_COMMIT, m, nonce)``), the
initiator answers only then, and the mailbox takes messages strictly in turn
and never a changed one. So the middle must fix its message to the initiator
before seeing the initiator's, and send its message to the joiner before the
joiner's is revealed: the words on each side are a fresh random draw, one
chance in 2**55 that they agree, and each attempt burns the code.

The attacker here plays the joiner's part towards an honest approving device
with the real code, searching among fresh SPAKE2 messages after seeing the
approver's message, and every way of using what it found is refused; the
honest joiner is shown to reveal its message only after the approver's is
fixed (the other half of the middle's position).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from livekit import RelayProcess, Relays
from test_cli_homes import relay_args

from sddsf.client import pairing as cp
from sddsf.client.device import Device
from sddsf.client.relay_client import RelayClient
from sddsf.crypto import Spake2, random_bytes
from sddsf.errors import AuthenticationError, ConflictError, DecodeError, SddsfError
from sddsf.protocol import pairing as pp
from sddsf.protocol.encoding import decode
from sddsf.protocol.identity import DeviceKeys
from sddsf.wire import unb64

WORDS = cp.WORDS
GRIND = 48  # SPAKE2 messages the attacker tries after seeing the approver's


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    work = tmp_path_factory.mktemp("pairing-relay")
    started = Relays(work)
    args, env = relay_args(work)
    try:
        yield started.start(*args, env=env)
    finally:
        started.stop_all()


@dataclass
class Approver:
    """An honest ``add_device`` running against the relay; what its screen showed."""

    device: Device
    shown: list[tuple[str, ...]] = field(default_factory=list)
    invites: asyncio.Queue[cp.PairingInvite] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[object] | None = None

    def start(self) -> None:
        def confirm(check: cp.PairingCheck) -> bool:
            self.shown.append(check.words)
            return True  # a person who would confirm matching words
        self.task = asyncio.create_task(cp.add_device(
            self.device, show=self.invites.put_nowait, confirm_sas=confirm, timeout_s=30,
            poll_s=0.05))

    async def code(self) -> pp.PairingCode:
        return pp.decode_code((await self.invites.get()).code, WORDS)

    async def outcome(self) -> BaseException | object:
        assert self.task is not None
        try:
            return await asyncio.wait_for(self.task, 60)
        except SddsfError as exc:
            return exc


@pytest.fixture
async def approver(relay: RelayProcess, tmp_path: Path) -> AsyncIterator[Approver]:
    laptop, _ = await Device.create_account(tmp_path / "laptop", relay.base_url, "laptop",
                                            passphrase=None, insecure_plaintext=True)
    a = Approver(laptop)
    a.start()
    yield a
    if a.task is not None:
        a.task.cancel()
        await asyncio.gather(a.task, return_exceptions=True)
    await laptop.close()


@dataclass
class Candidate:
    spake: Spake2
    keys: pp.PairingKeys


class Middle:
    """An attacker who knows the code, talking to the relay as the joiner would."""

    def __init__(self, relay_url: str, code: pp.PairingCode) -> None:
        self.code = code
        self.relay = RelayClient(relay_url, transport=httpx.AsyncHTTPTransport())
        self.token = random_bytes(pp.TOKEN_SIZE)
        self.channel = b""

    async def claim(self) -> None:
        self.channel, _ = await self.relay.claim_channel(self.code.nameplate, self.token)

    async def post(self, index: int, message: bytes) -> None:
        await self.relay.post_channel(self.channel, self.token, index, message)

    async def read(self) -> list[tuple[int, str, bytes]]:
        return await self.relay.read_channel(self.channel, self.token)

    async def approvers_message(self) -> bytes:
        for _ in range(600):
            for index, _sender, body in await self.read():
                if index == 1:
                    return pp.open_message(body, "pake", None,
                                           clear=("m",))[0].bytes_("m", max_size=64)
            await asyncio.sleep(0.05)
        raise AssertionError("the approver never sent its SPAKE2 message")

    def grind(self, initiator_msg: bytes, committed: bytes) -> Candidate:
        """Fresh SPAKE2 messages, each giving the approver other words; the one
        whose words the attacker likes best (here: the first in sorted order)."""
        found = []
        for _ in range(GRIND):
            spake = Spake2("joiner", self.code.password, id_a=cp._ID_A, id_b=cp._ID_B)
            found.append(Candidate(spake, pp.pairing_keys(
                "joiner", spake.finish(initiator_msg), channel_id=self.channel,
                commitment=committed, initiator_msg=initiator_msg,
                joiner_msg=spake.message, wordlist=WORDS)))
        return min(found, key=lambda c: c.keys.sas)

    def reveal(self, candidate: Candidate, nonce: bytes) -> bytes:
        keys = DeviceKeys.from_seeds(random_bytes(32), random_bytes(32))
        return pp.seal_message("reveal", candidate.keys.send, random_bytes(24), extra={
            "m": candidate.spake.message, "n": nonce, "c": candidate.keys.my_confirm},
            payload={"sign": keys.signing.public.raw, "kx": keys.kx.public, "name": "phone"})

    async def close(self) -> None:
        await self.relay.aclose()


async def _code_is_burnt(relay: RelayProcess, code: pp.PairingCode, middle: Middle) -> None:
    """The code gives no second attempt: its channel refuses the attacker, and a
    new claim of its number is refused."""
    with pytest.raises(ConflictError):
        await middle.read()
    again = Middle(relay.base_url, code)
    try:
        with pytest.raises(ConflictError):
            await again.claim()
    finally:
        await again.close()


async def _committed_middle(relay: RelayProcess, approver: Approver
                            ) -> tuple[pp.PairingCode, Middle, Spake2, bytes, bytes, bytes]:
    """The attacker claims, commits to an honest-looking message, then sees the
    approver's message (only now: the approver answers a commitment)."""
    code = await approver.code()
    middle = Middle(relay.base_url, code)
    await middle.claim()
    assert await middle.read() == []  # nothing to see before committing
    first = Spake2("joiner", code.password, id_a=cp._ID_A, id_b=cp._ID_B)
    nonce = random_bytes(pp.COMMIT_NONCE_SIZE)
    committed = pp.commitment(first.message, nonce)
    await middle.post(0, pp.seal_message("commit", None, b"", extra={"h": committed}))
    return code, middle, first, nonce, committed, await middle.approvers_message()


async def test_a_message_ground_after_seeing_the_approvers_is_refused_and_burns_the_code(
        relay: RelayProcess, approver: Approver) -> None:
    before = approver.device.registry().seq
    code, middle, first, nonce, committed, initiator_msg = await _committed_middle(
        relay, approver)
    try:
        chosen = middle.grind(initiator_msg, committed)
        assert chosen.spake.message != first.message
        await middle.post(2, middle.reveal(chosen, nonce))
        outcome = await approver.outcome()
        assert isinstance(outcome, AuthenticationError), outcome
        assert "committed to first" in outcome.message
        assert approver.shown == [], "the approver showed words the attacker chose"
        await _code_is_burnt(relay, code, middle)
    finally:
        await middle.close()
    await approver.device.refresh_registry()
    assert approver.device.registry().seq == before


async def test_changing_the_commitment_after_seeing_the_approvers_message_is_refused(
        relay: RelayProcess, approver: Approver) -> None:
    before = approver.device.registry().seq
    code, middle, _, _, committed, initiator_msg = await _committed_middle(relay, approver)
    try:
        chosen = middle.grind(initiator_msg, committed)
        nonce = random_bytes(pp.COMMIT_NONCE_SIZE)
        new_commitment = pp.commitment(chosen.spake.message, nonce)
        with pytest.raises(ConflictError, match="cannot be changed"):
            await middle.post(0, pp.seal_message("commit", None, b"",
                                                 extra={"h": new_commitment}))
        outcome = await approver.outcome()
        assert isinstance(outcome, ConflictError), outcome
        assert "out of order or changed" in outcome.message
        assert approver.shown == []
        await _code_is_burnt(relay, code, middle)
    finally:
        await middle.close()
    await approver.device.refresh_registry()
    assert approver.device.registry().seq == before


async def test_skipping_the_commitment_is_refused_and_burns_the_code(
        relay: RelayProcess, approver: Approver) -> None:
    code = await approver.code()
    middle = Middle(relay.base_url, code)
    try:
        await middle.claim()
        spake = Spake2("joiner", code.password, id_a=cp._ID_A, id_b=cp._ID_B)
        # Its SPAKE2 message straight away, in the commitment's place: the approver
        # does not answer anything but a commitment.
        await middle.post(0, pp.seal_message("pake", None, b"", extra={"m": spake.message}))
        outcome = await approver.outcome()
        assert isinstance(outcome, DecodeError) and "'commit'" in outcome.message, outcome
        assert approver.shown == []
        await _code_is_burnt(relay, code, middle)
    finally:
        await middle.close()
    # Ahead of its turn (the approver's message not there yet): refused, burnt.
    approver.start()
    code = await approver.code()
    middle = Middle(relay.base_url, code)
    try:
        await middle.claim()
        with pytest.raises(ConflictError, match="before message 0"):
            await middle.post(2, pp.seal_message("pake", None, b"", extra={"m": bytes(32)}))
        assert isinstance(await approver.outcome(), ConflictError)
        await _code_is_burnt(relay, code, middle)
    finally:
        await middle.close()


class Recorder(httpx.AsyncBaseTransport):
    """The real HTTP transport, keeping every pairing request and answer in order."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.log: list[tuple[str, str, bytes, bytes]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        if request.url.path.startswith("/v1/pairing"):
            self.log.append((request.method, request.url.path, request.content, body))
        return httpx.Response(response.status_code, headers=response.headers, content=body)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_honest_joiner_reveals_its_message_only_after_the_approvers_is_fixed(
        relay: RelayProcess, approver: Approver, tmp_path: Path) -> None:
    code = (await approver.invites.get()).code
    recorder = Recorder()
    phone = await cp.join(tmp_path / "phone", relay.base_url, code, "phone", passphrase=None,
                          insecure_plaintext=True, confirm_sas=lambda _: True,
                          transport=recorder, poll_s=0.05)
    assert not isinstance(await approver.outcome(), BaseException)
    posts = [(i, json.loads(req)) for i, (method, path, req, _) in enumerate(recorder.log)
             if method == "POST" and path.endswith("/messages")]
    assert [p["index"] for _, p in posts] == [0, 2, 4]
    commit = decode(unb64(posts[0][1]["body"]))
    assert isinstance(commit, dict) and commit["t"] == "commit" and set(commit) == {
        "v", "t", "h"}, commit
    reveal = decode(unb64(posts[1][1]["body"]))
    assert isinstance(reveal, dict) and reveal["t"] == "reveal"
    assert pp.commitment(reveal["m"], reveal["n"]) == commit["h"]
    # Between the commitment and the reveal, the joiner read the approver's message.
    reads = [json.loads(answer) for method, _, _, answer in recorder.log[posts[0][0]:posts[1][0]]
             if method == "GET"]
    assert any(m["index"] == 1 for r in reads for m in r["messages"]), reads
    await phone.close()
    await recorder.aclose()
