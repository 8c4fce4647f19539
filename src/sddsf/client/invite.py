"""Invitations to a shared space by a one-time code (``sddsf space share --invite``).

The same exchange as device pairing (``sddsf.client.pairing``, protocol 19):
the admin's device opens a mailbox on the relay and shows a short code; the
invited person's device commits to its SPAKE2 message, both derive a key only
the holders of the code can, and both show words to compare. Then, sealed under
that key, the guest sends its account's public keys and the admin's device adds
that account to the space and sends back the space id and the owner's account
key, which the guest pins and joins with. Neither key is taken from the relay:
a relay in the middle would have to guess the code in one try.

The SPAKE2 identities differ from device pairing's, so a device-pairing code
never opens an invitation (or the reverse): the keys would not match.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sddsf.client.engine.common import SyncReport
from sddsf.client.hosts import SharingHost
from sddsf.client.pairing import (
    WORDS,
    Mailbox,
    burn_reason,
    exchange,
    initiator_exchange,
    open_confirmed,
    open_initiator,
)
from sddsf.client.sharing import Sharing
from sddsf.crypto import random_bytes
from sddsf.errors import UsageError
from sddsf.protocol import pairing as pp
from sddsf.protocol.identity import AccountPublic
from sddsf.protocol.membership import Role

__all__ = ["InviteCheck", "InviteCode", "accept_invite", "invite"]

_IDS = (b"sddsf/v1/space-invite/admin", b"sddsf/v1/space-invite/guest")


@dataclass(frozen=True, slots=True)
class InviteCode:
    """What the admin's screen shows: the one-time code and until when it works."""

    code: str
    expires_ms: int


@dataclass(frozen=True, slots=True)
class InviteCheck:
    """What each screen shows before anything is shared: the words to compare and
    the other account's fingerprint (on the guest's screen, the owner's)."""

    words: tuple[str, ...]
    fingerprint: str


async def invite(admin: SharingHost, sharing: Sharing, space_id: bytes, role: Role, *,
                 show: Callable[[InviteCode], None], confirm: Callable[[InviteCheck], bool],
                 timeout_s: float = 600.0, poll_s: float = 0.5,
                 code_words: int = pp.CODE_WORDS) -> tuple[AccountPublic, SyncReport]:
    """Invite whoever enters the code shown: after the words are confirmed, add
    that account with ``role`` and tell its device the space and owner.

    Returns:
        The invited account and the report of the sync that opened its epoch.

    Raises:
        UsageError: timed out, or the words were not confirmed (nothing shared).
        AuthenticationError: a wrong code or a tampered exchange (``unauthenticated``).
        SddsfError: the relay or the other device misbehaved, or the share failed.
    """
    box, code, expires_ms = await open_initiator(admin.relay, code_words=code_words,
                                                 timeout_s=timeout_s, poll_s=poll_s)
    declined = False
    try:
        show(InviteCode(code.text(WORDS), expires_ms))
        keys, hello = await initiator_exchange(box, code, ids=_IDS)
        guest = AccountPublic.from_keys(hello.bytes_("account_sign", size=32),
                                        hello.bytes_("account_recovery", size=32))
        if not confirm(InviteCheck(keys.sas, guest.fingerprint)):
            declined = True
            raise UsageError("invitation cancelled: the words were not confirmed; nothing "
                             "was shared")
        report = await sharing.share(space_id, guest, role)
        owner = sharing.owner_key(space_id)
        await box.post(pp.seal_message("offer", keys.send, random_bytes(24), extra={
            "c": keys.my_confirm}, payload={
            "space": space_id, "owner_sign": owner.signing_key.raw,
            "owner_recovery": owner.recovery_key}))
        # The guest burns the mailbox once it read the offer (or it expires).
        return guest, report
    except BaseException as exc:
        await box.burn(burn_reason(exc, box, declined))
        raise


async def accept_invite(guest: SharingHost, sharing: Sharing, code: str, *,
                        confirm: Callable[[InviteCheck], bool], name: str = "",
                        timeout_s: float = 600.0, poll_s: float = 0.5) -> bytes:
    """Accept an invitation by its code: send this account's keys, then pin the
    owner's key the admin sends and join the space.

    Returns:
        The space's id.

    Raises:
        UsageError: a malformed code or typo, a timeout, words not confirmed.
        AuthenticationError: a wrong code (``unauthenticated``).
        NotFoundError: no mailbox with the code's number (expired or mistyped).
        SddsfError: the relay or the other device misbehaved.
    """
    parsed = pp.decode_code(code, WORDS)  # a typo never reaches the relay
    token = random_bytes(pp.TOKEN_SIZE)
    channel, _ = await guest.relay.claim_channel(parsed.nameplate, token)
    box = Mailbox(guest.relay, channel, token, "joiner", time.monotonic() + timeout_s, poll_s)
    declined = False
    try:
        keys = await exchange(box, parsed, channel, {
            "account_sign": guest.account.signing_key.raw,
            "account_recovery": guest.account.recovery_key}, ids=_IDS)
        if not confirm(InviteCheck(keys.sas, guest.account.fingerprint)):
            declined = True
            raise UsageError("invitation cancelled: the words were not confirmed")
        offer = open_confirmed(await box.next("the space"), "offer", keys)
        space_id = offer.bytes_("space", size=16)
        owner = AccountPublic.from_keys(offer.bytes_("owner_sign", size=32),
                                        offer.bytes_("owner_recovery", size=32))
    except BaseException as exc:
        await box.burn(burn_reason(exc, box, declined))
        raise
    await box.burn("done")
    await sharing.join(space_id, owner, name)
    return space_id
