"""Pairing a device on another machine: SPAKE2 over the relay's mailbox.

:func:`add_device` runs on an authorised device (the *initiator*) and
:func:`join` on the new one (the *joiner*); the message flow is in
:mod:`sddsf.protocol.pairing`. The relay sees the channel id, the SPAKE2
messages and ciphertext only. Both sides show a short authentication string
that the person compares (``confirm_sas``); any failure burns the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from mnemonic import Mnemonic

from sddsf.client.controller import report_pairing
from sddsf.client.device import Device, store_kind
from sddsf.client.governance import Change
from sddsf.client.relay_client import RelayClient
from sddsf.crypto import Ed25519PublicKey, Spake2, random_bytes
from sddsf.errors import (
    AuthenticationError,
    Code,
    DecryptError,
    SddsfError,
    UsageError,
)
from sddsf.protocol import pairing as pp
from sddsf.protocol import registry as reg
from sddsf.protocol.approval import ActionType, action_field
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.identity import AccountPublic, DeviceKeys, DevicePublic
from sddsf.protocol.schema import Fields

__all__ = ["PairingInvite", "add_device", "join"]

_ID_A = b"sddsf/v1/pairing/initiator"
_ID_B = b"sddsf/v1/pairing/joiner"
_WORDS = Mnemonic("english").wordlist


@dataclass(frozen=True, slots=True)
class PairingInvite:
    """What the initiator shows: the code (also for the QR code) and its expiry."""

    code: str
    relay_url: str
    expires_ms: int

    @property
    def uri(self) -> str:
        """What the QR code holds: the relay and the code."""
        return f"sddsf://pair?relay={self.relay_url}&code={self.code}"


class _Mailbox:
    """One side's view of a pairing channel: post, and wait for the peer's next message."""

    def __init__(self, relay: RelayClient, channel: bytes, me: str, deadline: float,
                 poll_s: float) -> None:
        self.relay, self.channel, self.me = relay, channel, me
        self.deadline, self.poll_s = deadline, poll_s
        self._after = -1

    async def post(self, message: bytes) -> None:
        await self.relay.post_channel(self.channel, self.me, message)

    async def next(self, what: str) -> bytes:
        while True:
            for index, sender, body in await self.relay.read_channel(self.channel,
                                                                     self._after):
                self._after = index
                if sender != self.me:
                    return body
            if time.monotonic() >= self.deadline:
                raise UsageError(f"pairing timed out waiting for the other device's {what}; "
                                 "start again with a new code")
            await asyncio.sleep(self.poll_s)

    async def burn(self) -> None:
        with contextlib.suppress(SddsfError):  # best effort: the channel expires anyway
            await self.relay.burn_channel(self.channel)


def _open_confirmed(data: bytes, kind: str, keys: pp.PairingKeys) -> Fields:
    """Open the peer's first sealed message and check its confirmation tag. Under a
    wrong code the box does not open either: both mean the same to the person."""
    try:
        outer, payload = pp.open_message(data, kind, keys.receive, clear=("c",))
    except DecryptError as exc:
        raise AuthenticationError("the pairing code did not match on the other device (a "
                                  "wrong code or an interception); the channel is burnt: "
                                  "start again with a new code", Code.UNAUTHENTICATED) from exc
    keys.check_peer(outer.bytes_("c", size=32))
    return payload


async def add_device(approver: Device, *, show: Callable[[PairingInvite], None],
                     confirm_sas: Callable[[tuple[str, ...]], bool],
                     timeout_s: float = 600.0, poll_s: float = 0.5) -> tuple[bytes, Change]:
    """Pair a new device: show a code, run SPAKE2, add the device to the
    registry (signed here, countersigned by it) and open a new key epoch of
    every space that includes it. Returns the new device's id and whether it
    is in; on an account that requires approval (§9.8) the entry is a
    proposal, and the device is in once enough devices approved it.

    Raises:
        UsageError: timed out, or the person did not confirm the words.
        AuthenticationError: a wrong code (``unauthenticated``).
        SddsfError: the relay or the other device misbehaved.
    """
    channel, expires_ms = await approver.relay.open_channel()
    password = random_bytes(pp.PASSWORD_SIZE)
    show(PairingInvite(pp.encode_code(channel, password), approver.relay_url, expires_ms))
    box = _Mailbox(approver.relay, channel, "initiator", time.monotonic() + timeout_s, poll_s)
    try:
        spake = Spake2("initiator", password, id_a=_ID_A, id_b=_ID_B)
        await box.post(pp.seal_message("pake", None, b"", extra={"m": spake.message}))
        peer_m = pp.open_message(await box.next("answer"), "pake", None,
                                 clear=("m",))[0].bytes_("m", max_size=64)
        keys = pp.pairing_keys("initiator", spake.finish(peer_m), spake.message, peer_m,
                               _WORDS)
        hello = _open_confirmed(await box.next("keys"), "hello", keys)
        public = DevicePublic.from_keys(hello.bytes_("sign", size=32),
                                        hello.bytes_("kx", size=32))
        name = hello.str_("name", max_len=128)
        if not confirm_sas(keys.sas):
            raise UsageError("pairing cancelled: the words were not confirmed")
        state = await approver.refresh_registry()
        governed = state.rules().governed  # then the entry is a proposal to add (§9.8)
        body = _add_body(approver, state, public, name)
        signature = reg.sign_body(body, approver.keys)
        relay_key = approver.relay_key.raw if approver.relay_key else b""
        await box.post(pp.seal_message("offer", keys.send, random_bytes(24), extra={
            "c": keys.my_confirm}, payload={
            "body": body, "account_sign": approver.account.signing_key.raw,
            "account_recovery": approver.account.recovery_key, "relay_key": relay_key}))
        _, cosign = pp.open_message(await box.next("countersignature"), "cosign",
                                    keys.receive)
        entry = reg.assemble_entry(body, signature, cosign.bytes_("cosig", size=64))
        seq = await approver.relay.append_registry(approver.account.account_id, entry)
        state = await approver.refresh_registry()
        change = Change(done=True)
        if not governed:
            await approver.governance.after(ActionType.ADD)  # an epoch that includes it
        elif not await approver.governance.enact(state.proposals[reg.entry_hash(entry)]):
            change = Change(done=False, pending=approver.governance.view(
                approver.registry().proposals[reg.entry_hash(entry)]))
        await box.post(pp.seal_message("done", keys.send, random_bytes(24),
                                       payload={"seq": seq}))
        return public.device_id, change  # the joiner burns the channel once it read "done"
    except BaseException as exc:
        await box.burn()
        if isinstance(exc, SddsfError):  # the controller counts failed pairing attempts
            await report_pairing(approver, "sas_mismatch" if "words" in exc.message
                                 else "expired" if "timed out" in exc.message else "failed")
        raise


async def join(home: Path, relay_url: str, code: str, name: str, *,
               passphrase: Callable[[], str] | None,
               confirm_sas: Callable[[tuple[str, ...]], bool],
               insecure_plaintext: bool = False, timeout_s: float = 600.0,
               poll_s: float = 0.5, transport: httpx.AsyncBaseTransport | None = None,
               clock: Callable[[], int] | None = None) -> Device:
    """Join an account with the code another device shows; creates the home only
    once the other device has added this one.

    Raises:
        UsageError: a malformed code or a typo, timeout, words not confirmed,
            or ``home`` already holds a device.
        AuthenticationError: a wrong code (``unauthenticated``).
        ConflictError: the channel expired or was burnt.
        SddsfError: the relay or the other device misbehaved.
    """
    parsed = pp.decode_code(code)
    if (home / "storage-key.json").exists():
        raise UsageError(f"{home} already holds a device; use another --home")
    keys = DeviceKeys.from_seeds(random_bytes(32), random_bytes(32))
    relay = RelayClient(relay_url, transport=transport)
    box = _Mailbox(relay, parsed.channel_id, "joiner", time.monotonic() + timeout_s, poll_s)
    try:
        spake = Spake2("joiner", parsed.password, id_a=_ID_A, id_b=_ID_B)
        await box.post(pp.seal_message("pake", None, b"", extra={"m": spake.message}))
        peer_m = pp.open_message(await box.next("first message"), "pake", None,
                                 clear=("m",))[0].bytes_("m", max_size=64)
        pk = pp.pairing_keys("joiner", spake.finish(peer_m), peer_m, spake.message, _WORDS)
        await box.post(pp.seal_message("hello", pk.send, random_bytes(24),
                                       extra={"c": pk.my_confirm}, payload={
                                           "sign": keys.signing.public.raw,
                                           "kx": keys.kx.public, "name": name}))
        offer = _open_confirmed(await box.next("approval"), "offer", pk)
        if not confirm_sas(pk.sas):
            raise UsageError("pairing cancelled: the words were not confirmed")
        body = offer.bytes_("body", max_size=64 * 1024)
        account = AccountPublic.from_keys(offer.bytes_("account_sign", size=32),
                                          offer.bytes_("account_recovery", size=32))
        _check_offer(body, account, keys, name)
        await box.post(pp.seal_message("cosign", pk.send, random_bytes(24), payload={
            "cosig": reg.countersign_body(body, keys)}))
        pp.open_message(await box.next("confirmation"), "done", pk.receive)
        relay_key = offer.bytes_("relay_key", max_size=32)
    finally:
        await box.burn()
        await relay.aclose()
    store = Device._new_home(home, keys, name, account, relay_url, passphrase,
                             insecure_plaintext)
    if relay_key:  # pin the relay key the approving device pinned
        Ed25519PublicKey.from_bytes(relay_key)
        store.put("id", b"relay", encode({"url": relay_url, "key": relay_key}))
    device = (Device(store, store_kind(home), transport=transport) if clock is None
              else Device(store, store_kind(home), transport=transport, clock=clock))
    state = await device.refresh_registry()  # verified from genesis against the account key
    if state.is_active(device.device_id):
        await device.sync()
    elif not device.awaiting_approval():
        raise UsageError("the relay's registry does not list this device; pairing failed")
    return device


def _check_offer(body: bytes, account: AccountPublic, keys: DeviceKeys, name: str) -> None:
    # The entry the joiner countersigns must add exactly this device, with this
    # name, to the account whose keys came over the authenticated channel.
    value = decode(body)
    if not isinstance(value, dict):
        raise UsageError("the other device offered a malformed registry entry")
    device = value.get("device")
    action = value.get("action")
    if value.get("type") == reg.EntryType.PROPOSE.value and isinstance(action, dict) \
            and action.get("type") == ActionType.ADD.value:
        device = action.get("device")  # a proposal to add it (the account needs approvals)
        value = {**value, "type": reg.EntryType.ADD.value}
    ok = (value.get("type") == reg.EntryType.ADD.value
          and value.get("account") == account.account_id
          and isinstance(device, dict) and device.get("sign") == keys.signing.public.raw
          and device.get("kx") == keys.kx.public and device.get("name") == name)
    if not ok:
        raise UsageError("the other device offered a registry entry that does not add this "
                         "device to its account; pairing stopped")


def _add_body(approver: Device, state: reg.RegistryState, public: DevicePublic,
              name: str) -> bytes:
    # A direct add entry, or a proposal to add when the policy requires approval.
    fields = {"device": reg.device_fields(public, name)}
    if state.rules().governed:
        etype = reg.EntryType.PROPOSE
        fields = {"action": action_field(ActionType.ADD, fields)}
    else:
        etype = reg.EntryType.ADD
    return reg.build_body(etype, account_id=state.account_id, seq=state.seq + 1,
                          prev=state.head, ts_ms=max(approver._clock(), state.last_ts),
                          signer_id=approver.device_id, fields=fields)

