"""Pairing a device on another machine (pairing version 2): a short code, a
commitment, SPAKE2 over the relay's mailbox, and words compared on both screens.

:func:`add_device` runs on an authorised device (the *initiator*) and
:func:`join` on the new one (the *joiner*); the message flow and why the
commitment makes the words worth comparing are in :mod:`sddsf.protocol.pairing`.
The relay sees the mailbox number, the SPAKE2 messages and ciphertext only.

Both screens show the words right after the key exchange, before either side
signs or stores anything; the approving screen also names the device that asks
to join and shows its key fingerprint. Any failure burns the code, with a
reason the other side shows.

The joiner never leaves a registered device without keys: it asks for its
passphrase before contacting the relay, and stores its home (keys, account,
relay key) before its countersignature leaves, since that is what lets the
approver append the entry. If the pairing stops before the countersignature,
the home is removed again; after it, the registry decides: listed means done
(or ``sddsf sync`` finishes it), and a pairing the approver stopped leaves
nothing behind.
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
from sddsf.client.device import Device
from sddsf.client.engine.common import store_kind
from sddsf.client.engine.identity import new_home
from sddsf.client.governance import Change
from sddsf.client.home import discard_home
from sddsf.client.keystore import Passphrase, passphrase_source
from sddsf.client.relay_client import RelayClient
from sddsf.client.store import LocalStore
from sddsf.crypto import Ed25519PublicKey, Spake2, random_bytes
from sddsf.errors import (
    AuthenticationError,
    AuthorizationError,
    Code,
    ConflictError,
    DecryptError,
    SddsfError,
    UsageError,
)
from sddsf.protocol import pairing as pp
from sddsf.protocol import registry as reg
from sddsf.protocol.approval import ActionType, action_field
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.identity import AccountPublic, DeviceKeys, DevicePublic, fingerprint
from sddsf.protocol.schema import Fields

__all__ = [
    "WORDS",
    "Mailbox",
    "PairingCheck",
    "PairingInvite",
    "add_device",
    "burn_reason",
    "exchange",
    "initiator_exchange",
    "join",
    "open_confirmed",
    "open_initiator",
    "open_reveal",
]

_ID_A = b"sddsf/v2/pairing/initiator"
_ID_B = b"sddsf/v2/pairing/joiner"
WORDS = Mnemonic("english").wordlist
_MIN_PASSPHRASE = 8  # the rule of sddsf.client.home, checked before pairing starts


@dataclass(frozen=True, slots=True)
class PairingInvite:
    """What the initiator shows: the code (also in the QR code) and its expiry."""

    code: str
    relay_url: str
    expires_ms: int

    @property
    def uri(self) -> str:
        """What the QR code holds: ``sddsf://pair?relay=...&code=...``."""
        return pp.pairing_uri(self.relay_url, self.code)


@dataclass(frozen=True, slots=True)
class PairingCheck:
    """What a screen shows its person before anything is committed: the words, and
    the device that is joining (on the approving screen the other device, as it
    names itself; on the new device this one)."""

    words: tuple[str, ...]
    name: str
    fingerprint: str


class Mailbox:
    """One side's view of a pairing channel: post in its turn, and wait for the
    peer's next message."""

    def __init__(self, relay: RelayClient, channel: bytes, token: bytes, role: str,
                 deadline: float, poll_s: float) -> None:
        self.relay, self.channel, self.token, self.role = relay, channel, token, role
        self.deadline, self.poll_s = deadline, poll_s
        self.timed_out = False
        self._after = -1
        self._mine = 0 if role == "joiner" else 1  # the index of this side's next message

    async def post(self, message: bytes) -> None:
        await self.relay.post_channel(self.channel, self.token, self._mine, message)
        self._mine += 2

    async def next(self, what: str) -> bytes:
        while True:
            for index, sender, body in await self.relay.read_channel(self.channel, self.token,
                                                                     self._after):
                self._after = index
                if sender != self.role:
                    return body
            if time.monotonic() >= self.deadline:
                self.timed_out = True
                raise UsageError(f"pairing timed out waiting for the other device's {what}; "
                                 "start again with a new code")
            await asyncio.sleep(self.poll_s)

    async def burn(self, reason: str) -> None:
        with contextlib.suppress(SddsfError):  # best effort: the channel expires anyway
            await self.relay.burn_channel(self.channel, self.token, reason)


def burn_reason(exc: BaseException, box: Mailbox, declined: bool) -> str:
    """Why this side stops, as the other side will be told."""
    if declined:
        return "rejected"
    if box.timed_out:
        return "timeout"
    if isinstance(exc, AuthenticationError | DecryptError):
        return "mismatch"
    if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
        return "cancelled"
    return "failed"


def open_confirmed(data: bytes, kind: str, keys: pp.PairingKeys,
                    clear: tuple[str, ...] = ("c",)) -> Fields:
    """Open the peer's first sealed message and check its confirmation tag. Under a
    wrong code the box does not open either: both mean the same to the person."""
    try:
        outer, payload = pp.open_message(data, kind, keys.receive, clear=clear)
    except DecryptError as exc:
        raise AuthenticationError("the pairing code did not match on the other device (a "
                                  "wrong code or an interception); the code is burnt: "
                                  "start again with a new code", Code.UNAUTHENTICATED) from exc
    keys.check_peer(outer.bytes_("c", size=32))
    return payload


async def open_initiator(relay: RelayClient, *, code_words: int, timeout_s: float,
                         poll_s: float) -> tuple[Mailbox, pp.PairingCode, int]:
    """The initiator's side: open a mailbox and draw its code. Returns the mailbox,
    the code (to show) and when the mailbox expires (Unix ms)."""
    token = random_bytes(pp.TOKEN_SIZE)
    channel, nameplate, expires_ms = await relay.open_channel(token)
    box = Mailbox(relay, channel, token, "initiator", time.monotonic() + timeout_s, poll_s)
    return box, pp.new_code(nameplate, code_words), expires_ms


async def initiator_exchange(box: Mailbox, code: pp.PairingCode, *,
                             ids: tuple[bytes, bytes] = (_ID_A, _ID_B)
                             ) -> tuple[pp.PairingKeys, Fields]:
    """Messages 0-2 on the initiator's side (the mirror of :func:`exchange`): read the
    commitment, send this side's SPAKE2 message, read the reveal. Returns the keys
    and the joiner's sealed hello."""
    committed = pp.open_message(await box.next("first message"), "commit", None,
                                clear=("h",))[0].bytes_("h", size=32)
    spake = Spake2("initiator", code.password, id_a=ids[0], id_b=ids[1])
    await box.post(pp.seal_message("pake", None, b"", extra={"m": spake.message}))
    return open_reveal(await box.next("key exchange"), spake, box.channel, committed)


def open_reveal(data: bytes, spake: Spake2, channel: bytes,
                 committed: bytes) -> tuple[pp.PairingKeys, Fields]:
    """The initiator reads message 2: the revealed message must be the committed
    one (before anything is derived from it); then the keys, tag and hello."""
    outer, _ = pp.open_message(data, "reveal", None, clear=("m", "n", "c", "box"))
    joiner_msg = outer.bytes_("m", max_size=64)
    pp.check_commitment(committed, joiner_msg, outer.bytes_("n", size=pp.COMMIT_NONCE_SIZE))
    keys = pp.pairing_keys("initiator", spake.finish(joiner_msg), channel_id=channel,
                           commitment=committed, initiator_msg=spake.message,
                           joiner_msg=joiner_msg, wordlist=WORDS)
    return keys, open_confirmed(data, "reveal", keys, clear=("m", "n", "c"))


async def add_device(approver: Device, *, show: Callable[[PairingInvite], None],
                     confirm_sas: Callable[[PairingCheck], bool], timeout_s: float = 600.0,
                     poll_s: float = 0.5, code_words: int = pp.CODE_WORDS
                     ) -> tuple[bytes, Change]:
    """Pair a new device: show a code, run the commitment and SPAKE2, show the
    words with the joining device's name and fingerprint, and if the person
    confirms, add it to the registry (signed here, countersigned by it) and open
    a new key epoch of every space that includes it. Returns the new device's id
    and whether it is in; on an account that requires approval (§9.8) the entry
    is a proposal, and the device is in once enough devices approved it.

    Raises:
        UsageError: timed out, or the person did not confirm the words.
        AuthenticationError: a wrong code, or a key exchange that does not match
            its commitment (``unauthenticated``).
        ConflictError: the code was used by a second device, or the other side
            stopped (the message says why).
        SddsfError: the relay or the other device misbehaved.
    """
    box, code, expires_ms = await open_initiator(approver.relay, code_words=code_words,
                                                 timeout_s=timeout_s, poll_s=poll_s)
    declined = False
    try:
        show(PairingInvite(code.text(WORDS), approver.relay_url, expires_ms))
        keys, hello = await initiator_exchange(box, code)
        public = DevicePublic.from_keys(hello.bytes_("sign", size=32),
                                        hello.bytes_("kx", size=32))
        name = hello.str_("name", max_len=128)
        if not confirm_sas(PairingCheck(keys.sas, name, fingerprint(public.device_id))):
            declined = True
            raise UsageError("pairing cancelled: the words were not confirmed; nothing was "
                             "added")
        return await _approve(approver, box, keys, public, name)
    except BaseException as exc:
        reason = burn_reason(exc, box, declined)
        await box.burn(reason)
        if isinstance(exc, SddsfError):  # the controller counts failed pairing attempts
            await report_pairing(approver, {"rejected": "sas_mismatch",
                                            "timeout": "expired"}.get(reason, "failed"))
        raise


async def _approve(approver: Device, box: Mailbox, keys: pp.PairingKeys,
                   public: DevicePublic, name: str) -> tuple[bytes, Change]:
    """After the person confirmed: offer the signed entry, append it with the
    joiner's countersignature, open the epochs, tell the joiner."""
    state = await approver.refresh_registry()
    governed = state.rules().governed  # then the entry is a proposal to add (§9.8)
    body = _add_body(approver, state, public, name)
    signature = reg.sign_body(body, approver.keys)
    relay_key = approver.relay_key.raw if approver.relay_key else b""
    await box.post(pp.seal_message("offer", keys.send, random_bytes(24), extra={
        "c": keys.my_confirm}, payload={
        "body": body, "account_sign": approver.account.signing_key.raw,
        "account_recovery": approver.account.recovery_key, "relay_key": relay_key}))
    _, cosign = pp.open_message(await box.next("countersignature"), "cosign", keys.receive)
    entry = reg.assemble_entry(body, signature, cosign.bytes_("cosig", size=64))
    seq = await _append(approver, entry, public.device_id)
    state = await approver.refresh_registry()
    change = Change(done=True)
    if not governed:
        await approver.governance.after(ActionType.ADD)  # an epoch that includes it
    elif not await approver.governance.enact(state.proposals[reg.entry_hash(entry)]):
        change = Change(done=False, pending=approver.governance.view(
            approver.registry().proposals[reg.entry_hash(entry)]))
    await box.post(pp.seal_message("done", keys.send, random_bytes(24), payload={"seq": seq}))
    return public.device_id, change  # the joiner burns the channel once it read "done"


async def _append(approver: Device, entry: bytes, device_id: bytes) -> int:
    """Append the entry. An append whose answer was lost may have landed: then the
    pairing goes on (the joiner is told "done"), instead of burning the code
    over a device that is in the registry."""
    try:
        return await approver.relay.append_registry(approver.account.account_id, entry)
    except SddsfError:
        with contextlib.suppress(SddsfError):
            state = await approver.refresh_registry()
            if state.device(device_id) is not None \
                    or reg.entry_hash(entry) in state.proposals:
                return state.seq
        raise


async def join(home: Path, relay_url: str, code: str, name: str, *,
               passphrase: Passphrase | None,
               confirm_sas: Callable[[PairingCheck], bool],
               insecure_plaintext: bool = False, timeout_s: float = 600.0,
               poll_s: float = 0.5, transport: httpx.AsyncBaseTransport | None = None,
               clock: Callable[[], int] | None = None) -> Device:
    """Join an account with the code another device shows.

    The code is checked (typos) and the passphrase asked before the relay is
    contacted. ``confirm_sas`` is called with the words right after the key
    exchange, before anything is stored or countersigned.

    Raises:
        UsageError: a malformed code or a typo, a short passphrase, a timeout,
            words not confirmed, or ``home`` already holds a device.
        AuthenticationError: a wrong code (``unauthenticated``).
        NotFoundError: no mailbox with the code's number (expired or mistyped).
        ConflictError: someone else used the code, or the other side stopped
            (the message says why); nothing is kept here then.
        SddsfError: the relay or the other device misbehaved.
    """
    parsed = pp.decode_code(code, WORDS)  # a typo never reaches the relay
    if (home / "storage-key.json").exists():
        raise UsageError(f"{home} already holds a device; use another --home")
    ask = passphrase_source(passphrase)
    secret = None if ask is None or insecure_plaintext else ask()
    if secret is not None and len(secret) < _MIN_PASSPHRASE:
        raise UsageError(f"the passphrase must have at least {_MIN_PASSPHRASE} characters")
    keys = DeviceKeys.from_seeds(random_bytes(32), random_bytes(32))
    made_dir = not home.exists()
    relay = RelayClient(relay_url, transport=transport)
    try:
        store, stopped = await _join_mailbox(relay, parsed, keys, name, confirm_sas, timeout_s,
                                             poll_s, lambda account, relay_key: _new_home(
                                                 home, keys, name, account, relay_url,
                                                 relay_key, secret, insecure_plaintext),
                                             lambda: discard_home(home, remove_dir=made_dir))
    finally:
        await relay.aclose()
    device = (Device(store, store_kind(home), transport=transport) if clock is None
              else Device(store, store_kind(home), transport=transport, clock=clock))
    return await _settle(device, home, made_dir, stopped)


async def _join_mailbox(relay: RelayClient, parsed: pp.PairingCode, keys: DeviceKeys,
                        name: str, confirm_sas: Callable[[PairingCheck], bool],
                        timeout_s: float, poll_s: float,
                        make_home: Callable[[AccountPublic, bytes], LocalStore],
                        discard: Callable[[], None]) -> tuple[LocalStore, SddsfError | None]:
    """The joiner's side of the mailbox, up to its countersignature. Returns the
    new home's store and, if the approver's "done" did not come, why."""
    token = random_bytes(pp.TOKEN_SIZE)
    channel, _ = await relay.claim_channel(parsed.nameplate, token)
    box = Mailbox(relay, channel, token, "joiner", time.monotonic() + timeout_s, poll_s)
    store: LocalStore | None = None
    declined = False
    try:
        pk = await exchange(box, parsed, channel, {"sign": keys.signing.public.raw,
                                                   "kx": keys.kx.public, "name": name})
        if not confirm_sas(PairingCheck(pk.sas, name, fingerprint(keys.device_id))):
            declined = True
            raise UsageError("pairing cancelled: the words were not confirmed; nothing was "
                             "added")
        offer = open_confirmed(await box.next("approval"), "offer", pk)
        body = offer.bytes_("body", max_size=64 * 1024)
        account = AccountPublic.from_keys(offer.bytes_("account_sign", size=32),
                                          offer.bytes_("account_recovery", size=32))
        _check_offer(body, account, keys, name)
        relay_key = offer.bytes_("relay_key", max_size=32)
        if relay_key:
            Ed25519PublicKey.from_bytes(relay_key)
        # Write-ahead: the keys are on disk before the countersignature that lets
        # the approver append the entry leaves this device.
        store = make_home(account, relay_key)
        cosign = pp.seal_message("cosign", pk.send, random_bytes(24), payload={
            "cosig": reg.countersign_body(body, keys)})
    except BaseException as exc:
        await box.burn(burn_reason(exc, box, declined))
        if store is not None:
            store.close()
            discard()
        raise
    # From the first attempt to send the countersignature on, the entry may exist:
    # the home stays, and the registry decides (``_settle``).
    try:
        await box.post(cosign)
        pp.open_message(await box.next("confirmation"), "done", pk.receive)
    except SddsfError as exc:
        return store, exc
    await box.burn("done")
    return store, None


async def exchange(box: Mailbox, parsed: pp.PairingCode, channel: bytes,
                   hello: dict[str, object], *,
                   ids: tuple[bytes, bytes] = (_ID_A, _ID_B)) -> pp.PairingKeys:
    """Messages 0-2: commit, read the initiator's SPAKE2 message, reveal ``hello``
    (sealed). ``ids``: the SPAKE2 identities, which separate device pairing
    from other uses of the mailbox (a code of one never opens the other)."""
    spake = Spake2("joiner", parsed.password, id_a=ids[0], id_b=ids[1])
    nonce = random_bytes(pp.COMMIT_NONCE_SIZE)
    committed = pp.commitment(spake.message, nonce)
    await box.post(pp.seal_message("commit", None, b"", extra={"h": committed}))
    # This side's message is revealed only once the initiator's is fixed.
    initiator_msg = pp.open_message(await box.next("key exchange"), "pake", None,
                                    clear=("m",))[0].bytes_("m", max_size=64)
    pk = pp.pairing_keys("joiner", spake.finish(initiator_msg), channel_id=channel,
                         commitment=committed, initiator_msg=initiator_msg,
                         joiner_msg=spake.message, wordlist=WORDS)
    await box.post(pp.seal_message("reveal", pk.send, random_bytes(24), extra={
        "m": spake.message, "n": nonce, "c": pk.my_confirm}, payload=hello))
    return pk


def _new_home(home: Path, keys: DeviceKeys, name: str, account: AccountPublic,
              relay_url: str, relay_key: bytes, secret: str | None,
              insecure_plaintext: bool) -> LocalStore:
    """The joiner's home, with the relay key the approving device pinned."""
    store = new_home(home, keys, name, account, relay_url,
                     None if secret is None else (lambda: secret), insecure_plaintext)
    if relay_key:
        store.put("id", b"relay", encode({"url": relay_url, "key": relay_key}))
    return store


async def _settle(device: Device, home: Path, made_dir: bool,
                  stopped: SddsfError | None) -> Device:
    """After the countersignature: the registry (verified from genesis against
    the account key) says whether this device was added."""
    try:
        state: reg.RegistryState | None = await device.refresh_registry()
    except AuthorizationError as exc:
        if exc.code is not Code.UNKNOWN_DEVICE:
            await device.close()
            raise UsageError(f"this device countersigned its addition but cannot check the "
                             f"account's registry ({exc.message}); run `sddsf sync` here to "
                             f"finish") from exc
        state = None  # the relay reads the registry only to its devices: not one of them
    except SddsfError as exc:
        await device.close()
        raise UsageError(f"this device countersigned its addition but cannot check the "
                         f"account's registry ({exc.message}); run `sddsf sync` here to "
                         f"finish") from exc
    if state is not None and state.is_active(device.device_id):
        await device.sync()
        return device
    if state is not None and device.awaiting_approval() is not None:
        return device
    await device.close()
    if isinstance(stopped, ConflictError):  # the approver stopped before appending
        discard_home(home, remove_dir=made_dir)
        raise ConflictError(f"{stopped.message} (nothing was kept on this device)")
    if stopped is not None:
        raise UsageError(f"the other device did not confirm ({stopped.message}); if it added "
                         f"this device, `sddsf sync` here finishes the join, otherwise delete "
                         f"{home}") from stopped
    raise UsageError("the relay's registry does not list this device; pairing failed")


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
