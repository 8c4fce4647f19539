"""The pairing mailbox's rules, shared by the storage backends (pure functions).

A channel (``docs/protocol.md`` 17.4.7) has two slots. The initiator's slot is
bound to the token it opened the channel with; the joiner's to the token of the
first claim of the channel's number. Messages alternate, joiner first: message
``i`` is the joiner's when ``i`` is even. Every refusal of a participant's post
(out of order, the other side's slot, a change of a posted message, a full
channel) and every second claim burns the channel, so one code gives exactly
one attempt. Burning keeps the first reason and who gave it, so the other side
learns why.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from sddsf.errors import AuthenticationError, ConflictError, UsageError
from sddsf.protocol.pairing import expected_sender

__all__ = [
    "CLIENT_REASONS",
    "ChannelRow",
    "ClaimVerdict",
    "PostVerdict",
    "check_usable",
    "claim_verdict",
    "closed_message",
    "contested_message",
    "judge_post",
    "role_of",
    "validate_reason",
]

#: Why a participant burns a channel (``POST .../burn``).
CLIENT_REASONS: Final = ("done", "cancelled", "rejected", "mismatch", "timeout", "failed")
#: Why the relay burns one: a second claim, or a refused post.
CONTESTED: Final = "contested"
VIOLATION: Final = "violation"
_SIDE: Final = {"initiator": "the approving device", "joiner": "the new device"}


@dataclass(frozen=True, slots=True)
class ChannelRow:
    """A stored channel, as the rules need it."""

    channel_id: bytes
    expires_ms: int
    burnt: bool
    reason: str | None
    burnt_by: str | None
    initiator_token: bytes | None
    joiner_token: bytes | None
    count: int


def validate_reason(reason: str) -> None:
    """Raises UsageError for a burn reason a participant may not give."""
    if reason not in CLIENT_REASONS:
        raise UsageError(f"a pairing burn reason is one of {', '.join(CLIENT_REASONS)}")


def role_of(row: ChannelRow | None, token_hash: bytes) -> tuple[ChannelRow, str]:
    """The channel and whose slot ``token_hash`` holds (``initiator`` or ``joiner``).

    Raises:
        ConflictError: an unknown channel, or one opened by a relay before
            pairing version 2.
        AuthenticationError: the token holds neither slot.
    """
    if row is None:
        raise ConflictError("unknown pairing channel")
    if row.initiator_token is None:
        raise ConflictError("this pairing was started with an older sddsf (pairing version "
                            "1); start again with a new code")
    if token_hash == row.initiator_token:
        return row, "initiator"
    if token_hash == row.joiner_token:
        return row, "joiner"
    raise AuthenticationError("this pairing token holds no slot of the channel")


def closed_message(reason: str | None, burnt_by: str | None) -> str:
    """What a person is told about a burnt channel, by the first reason given."""
    side = _SIDE.get(burnt_by or "", "one of the devices")
    return {
        "done": "this pairing code is closed: a device was already paired with it. If "
                "that was not your device, someone else had the code: check `sddsf device "
                "list` on the approving device",
        "cancelled": f"the pairing was cancelled on {side}; start again with a new code",
        "rejected": f"the person at {side} did not confirm the words, so nothing was added. "
                    "If the words differed, someone may be in the middle: start again with a "
                    "new code",
        "mismatch": f"{side} found that the pairing code or the key exchange did not match "
                    "(a wrong code, or someone in the middle), so nothing was added; start "
                    "again with a new code",
        "timeout": f"{side} stopped waiting; start again with a new code",
        CONTESTED: "someone else used this pairing code: two devices tried to join with it "
                   "(someone who saw the code, or who tried its number). The pairing was "
                   "stopped and nothing was added; start again with a new code",
        VIOLATION: "a pairing message was sent out of order or changed, so the pairing was "
                   "stopped and nothing was added; start again with a new code",
    }.get(reason or "", f"the pairing failed on {side}; start again with a new code")


def contested_message() -> str:
    """What the second claimer of a channel is told."""
    return ("someone else used this pairing code: another device claimed it first (someone "
            "who saw the code, or who tried its number). The pairing was stopped and nothing "
            "was added for this device; start again with a new code, shown only to you")


def check_usable(row: ChannelRow, now_ms: int) -> None:
    """Raises ConflictError for a burnt or expired channel (saying why)."""
    if row.burnt:
        raise ConflictError(closed_message(row.reason, row.burnt_by))
    if now_ms >= row.expires_ms:
        raise ConflictError("the pairing code expired; start again with a new code")


class ClaimVerdict(Enum):
    """What a claim of a channel's number does."""

    TAKE = "take"  # the joiner slot was free: bind it to this token
    SAME = "same"  # this token holds it already (a retried claim)
    CONTESTED = "contested"  # another token holds it: burn, refuse


def claim_verdict(row: ChannelRow, token_hash: bytes, now_ms: int) -> ClaimVerdict:
    """Decide a claim of ``row`` by ``token_hash``.

    Raises:
        ConflictError: the channel is burnt or expired.
        UsageError: the initiator's own token.
    """
    check_usable(row, now_ms)
    if token_hash == row.initiator_token:
        raise UsageError("the approving device cannot also join its own pairing")
    if row.joiner_token is None:
        return ClaimVerdict.TAKE
    return ClaimVerdict.SAME if token_hash == row.joiner_token else ClaimVerdict.CONTESTED


class PostVerdict(Enum):
    """What a participant's post does."""

    APPEND = "append"
    REPEAT = "repeat"  # the same message at the same index again (a retry): answered as stored
    REFUSE = "refuse"  # burn the channel, refuse


def judge_post(row: ChannelRow, role: str, index: int, body: bytes,
               existing: tuple[str, bytes] | None,
               max_messages: int) -> tuple[PostVerdict, str]:
    """Decide a post of ``body`` at ``index`` by ``role``; ``existing`` is the
    stored ``(sender, body)`` at ``index`` if there is one. The string says why
    a post is refused."""
    stop = "; the pairing was stopped and nothing was added: start again with a new code"
    if index < row.count:
        if existing == (role, body):
            return PostVerdict.REPEAT, ""
        return PostVerdict.REFUSE, f"pairing message {index} cannot be changed once posted{stop}"
    if index > row.count:
        return PostVerdict.REFUSE, (f"pairing message {index} was posted before message "
                                    f"{row.count}{stop}")
    if index >= max_messages:
        return PostVerdict.REFUSE, f"the pairing channel is full ({max_messages} messages){stop}"
    if expected_sender(index) != role:
        return PostVerdict.REFUSE, (f"pairing message {index} is {_SIDE[expected_sender(index)]}"
                                    f"'s to send, not {_SIDE[role]}'s{stop}")
    return PostVerdict.APPEND, ""
