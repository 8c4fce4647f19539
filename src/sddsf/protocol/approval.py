"""k-of-n approval of device changes: proposals, approvals, vetoes, enactment.

An account's registry policy can make device changes *governed*: with
``approvals`` > 1 or ``veto_window_s`` > 0, no single device may add or revoke a
device or change the policy by itself. Instead (``docs/protocol.md`` §9.8):

* a device appends ``propose`` carrying the action (its own approval counts);
* other active devices append ``approve`` (or ``veto``, which kills it);
* once enough *currently active* devices approved and the veto window since
  the proposal has passed, any active device appends ``enact``, which takes
  effect exactly as the direct entry would have.

Invariants the functions here keep (they are the point of the feature):

* one stolen device cannot change the device set alone when ``approvals`` ≥ 2
  and there are at least two other devices;
* the owner is never locked out: the target of a revocation neither counts
  towards nor may veto it, the number of approvals needed never exceeds the
  number of devices that can give one, and the account key (the recovery
  phrase) is never governed;
* a revoked proposer's proposals are void; approvals of devices revoked since
  no longer count;
* entry timestamps of these types never go back along the chain, so a veto
  window cannot be skipped by backdating against the chain (the relay also
  bounds them by its own clock, see §17.4.1);
* at the relay the veto window is also measured on the relay's clock, from when
  it stored the proposal (:func:`check_enact_on_clock`): devices choose entry
  timestamps, so by those alone a proposal dated early and an enactment dated
  late would end the window up to twice the allowed skew early.

This module is pure: :mod:`sddsf.protocol.registry` calls :func:`step` from
``RegistryState.apply``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from sddsf.errors import (
    AuthorizationError,
    ClockSkewError,
    Code,
    DecodeError,
    RegistryError,
    SignatureError,
)
from sddsf.protocol import labels
from sddsf.protocol.identity import ID_SIZE, DevicePublic
from sddsf.protocol.labels import labelled
from sddsf.protocol.limits import ProtocolLimits
from sddsf.protocol.schema import Fields, expect_map

if TYPE_CHECKING:  # only for annotations: registry imports this module
    from sddsf.protocol.registry import RegistryEntry, RegistryState

__all__ = [
    "MAX_PENDING",
    "Action",
    "ActionType",
    "ApprovalRules",
    "Proposal",
    "ProposalStatus",
    "action_field",
    "action_type_of",
    "check_enact_on_clock",
    "parse_device",
    "parse_policy",
    "rules_of",
    "step",
    "tally",
]

MAX_PENDING: Final = 16  # open proposals per account: bounded state, bounded spam
DAY_S: Final = 86_400
# Known policy keys and their [lo, hi] (integers, seconds or counts). Other keys
# are stored and ignored, so newer clients can add settings.
POLICY_INTS: Final[dict[str, tuple[int, int]]] = {
    "approvals": (1, 16),
    "veto_window_s": (0, 30 * DAY_S),
    "proposal_ttl_s": (3_600, 90 * DAY_S),
    "max_epoch_age_s": (0, 10 * 365 * DAY_S),
}
DEFAULT_TTL_S: Final = 7 * DAY_S


class ActionType(StrEnum):
    """What a proposal would do when enacted."""

    ADD = "add"
    REVOKE = "revoke"
    POLICY = "policy"


class ProposalStatus(StrEnum):
    """Where a proposal is in its life (``expired`` is derived from time)."""

    PENDING = "pending"
    VETOED = "vetoed"
    ENACTED = "enacted"


@dataclass(frozen=True, slots=True)
class ApprovalRules:
    """The approval settings of a registry policy."""

    approvals: int = 1
    veto_window_ms: int = 0
    ttl_ms: int = DEFAULT_TTL_S * 1000

    @property
    def governed(self) -> bool:
        """Whether device changes by a device need a proposal."""
        return self.approvals > 1 or self.veto_window_ms > 0


@dataclass(frozen=True, slots=True)
class Action:
    """The change a proposal carries."""

    type: ActionType
    device: DevicePublic | None = None  # add
    name: str = ""                      # add
    target: bytes | None = None         # revoke
    reason: str = ""                    # revoke
    policy: Mapping[str, object] | None = None  # policy


@dataclass(frozen=True, slots=True)
class Proposal:
    """One proposal and its approvals, as the verified chain left it."""

    id: bytes            # entry hash of the propose entry
    seq: int
    ts: int
    expires: int         # ms; approve/veto/enact entries after this are refused
    proposer: bytes
    action: Action
    approvals: frozenset[bytes]
    status: ProposalStatus = ProposalStatus.PENDING
    closed_seq: int | None = None
    closed_by: bytes | None = None
    veto_reason: str = ""

    def open_at(self, ts_ms: int) -> bool:
        """Pending and not expired at ``ts_ms``."""
        return self.status is ProposalStatus.PENDING and ts_ms <= self.expires


def parse_policy(f: Fields) -> dict[str, object]:
    """The ``policy`` value: at most 64 text keys; known keys typed and bounded.

    Raises:
        DecodeError: ``malformed``.
    """
    raw = f.raw("policy")
    if not isinstance(raw, dict) or len(raw) > 64:
        raise DecodeError("registry policy: expected a map of at most 64 settings")
    for k, v in raw.items():
        if not isinstance(k, str) or not isinstance(v, bool | int | str):
            raise DecodeError("registry policy: keys are text, values are bool/int/text")
        if k in POLICY_INTS:
            lo, hi = POLICY_INTS[k]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise DecodeError(f"registry policy: {k} must be an integer in [{lo}, {hi}]")
    policy = {str(k): v for k, v in raw.items()}
    rules = rules_of(policy)
    if rules.ttl_ms <= rules.veto_window_ms:
        raise DecodeError("registry policy: proposal_ttl_s must exceed veto_window_s, or no "
                          "proposal could ever be enacted")
    return policy


def rules_of(policy: Mapping[str, object]) -> ApprovalRules:
    """Approval settings of a (checked) policy map, defaults for absent keys."""
    def get(key: str, default: int) -> int:
        v = policy.get(key, default)
        return v if isinstance(v, int) and not isinstance(v, bool) else default
    return ApprovalRules(get("approvals", 1), get("veto_window_s", 0) * 1000,
                         get("proposal_ttl_s", DEFAULT_TTL_S) * 1000)


def parse_device(f: Fields, limits: ProtocolLimits) -> tuple[DevicePublic, str]:
    """The ``device`` field: ``{"sign", "kx", "name"}`` (keys checked, §4.4/4.5)."""
    d = f.map_("device", ("sign", "kx", "name"))
    public = DevicePublic.from_keys(d.bytes_("sign", size=32), d.bytes_("kx", size=32))
    return public, d.str_("name", max_len=limits.max_name)


_ACTION_FIELDS: Final[dict[ActionType, tuple[str, ...]]] = {
    ActionType.ADD: ("type", "device"),
    ActionType.REVOKE: ("type", "target", "reason"),
    ActionType.POLICY: ("type", "policy"),
}


def action_type_of(value: object) -> ActionType:
    """The type of an ``action`` map (decode-time: it decides the countersignature).

    Raises:
        DecodeError: not a map with a known text ``type`` (``malformed``).
    """
    kind = value.get("type") if isinstance(value, dict) else None
    try:
        return ActionType(kind) if isinstance(kind, str) else ActionType("")
    except ValueError:
        raise DecodeError(f"registry proposal: unknown action {kind!r} (add, revoke or "
                          "policy)") from None


def _parse_action(value: object, limits: ProtocolLimits) -> Action:
    kind = action_type_of(value)
    f = expect_map(value, f"registry proposal {kind.value} action", _ACTION_FIELDS[kind])
    if kind is ActionType.ADD:
        public, name = parse_device(f, limits)
        return Action(kind, device=public, name=name)
    if kind is ActionType.REVOKE:
        return Action(kind, target=f.bytes_("target", size=ID_SIZE),
                      reason=f.str_("reason", max_len=256))
    return Action(kind, policy=parse_policy(f))


def action_field(kind: ActionType, fields: Mapping[str, object]) -> dict[str, object]:
    """Wire form of an action: ``{"type": kind, **fields}`` (see :func:`_parse_action`)."""
    return {"type": kind.value, **fields}


def tally(state: RegistryState, p: Proposal) -> tuple[int, int]:
    """``(approvals that count now, approvals needed now)`` for ``p``.

    Only active devices count, and never the target of a revocation. What is
    needed is the policy's ``approvals`` but at most the number of devices
    that could approve (so losing devices never locks the owner out), and at
    least one.
    """
    electors = {r.device_id for r in state.active_devices()} - {p.action.target}
    need = max(1, min(rules_of(state.policy).approvals, len(electors)))
    return len(p.approvals & electors), need


def step(state: RegistryState, e: RegistryEntry) -> tuple[dict[bytes, Proposal], Proposal | None]:
    """Apply a propose/approve/veto/enact entry whose ``by`` signature verified.

    Returns the new proposal map and, for ``enact``, the proposal whose action
    the registry must now carry out.

    Raises:
        RegistryError: ``registry_invalid`` (unknown, closed or expired proposal,
            not enough approvals, veto window still open, time going back, ...).
        AuthorizationError: ``not_authorized`` (who may not sign this).
        SignatureError: the proposed device's countersignature does not verify.
        DecodeError: a malformed action.
    """
    if e.ts < state.last_ts:
        raise RegistryError(f"registry {e.type.value} entry is dated {e.ts}, before the "
                            f"previous entry ({state.last_ts}); time may not go back here")
    proposals = dict(state.proposals)
    if e.type.value == "propose":
        proposals[e.hash] = _propose(state, e)
        return proposals, None
    pid = e.fields.bytes_("proposal", size=32)
    p = proposals.get(pid)
    if p is None:
        raise RegistryError(f"registry {e.type.value} entry names an unknown proposal")
    if p.status is not ProposalStatus.PENDING:
        raise RegistryError(f"proposal {pid.hex()[:12]} is already {p.status.value}")
    if e.ts > p.expires:
        raise RegistryError(f"proposal {pid.hex()[:12]} expired at {p.expires} ms")
    if e.signer == p.action.target:
        raise AuthorizationError("the target of a revocation may not approve, veto or enact "
                                 "it", Code.NOT_AUTHORIZED)
    if e.type.value == "veto":
        proposals[pid] = replace(p, status=ProposalStatus.VETOED, closed_seq=e.seq,
                                 closed_by=e.signer,
                                 veto_reason=e.fields.str_("reason", max_len=256))
        return proposals, None
    if not state.is_active(p.proposer):
        raise RegistryError(f"proposal {pid.hex()[:12]} is void: its proposer was revoked")
    if e.type.value == "approve":
        if e.signer == state.account_id:
            raise AuthorizationError("the account key does not approve proposals; it signs "
                                     "device changes directly", Code.NOT_AUTHORIZED)
        if e.signer in p.approvals:
            raise RegistryError("this device already approved that proposal")
        proposals[pid] = replace(p, approvals=p.approvals | {e.signer})
        return proposals, None
    have, need = tally(state, p)
    if have < need:
        raise RegistryError(f"proposal {pid.hex()[:12]} has {have} of the {need} approvals "
                            "it needs")
    opens = p.ts + rules_of(state.policy).veto_window_ms
    if e.ts < opens:
        raise RegistryError(f"proposal {pid.hex()[:12]} is in its veto window until "
                            f"{opens} ms")
    proposals[pid] = replace(p, status=ProposalStatus.ENACTED, closed_seq=e.seq,
                             closed_by=e.signer)
    return proposals, proposals[pid]


def check_enact_on_clock(state: RegistryState, e: RegistryEntry, proposed_at_ms: int | None,
                         now_ms: int) -> None:
    """The relay's own check of an ``enact`` entry ``e`` (``state``: the registry
    before it): the veto window must have passed on the relay's clock since it
    stored the proposal (``proposed_at_ms``; None if it has no record, which is
    refused). Other entry types pass.

    Raises:
        ClockSkewError: ``clock_skew``: by the entries' times the window has passed,
            by the relay's clock it has not (an enacting device retries later).
    """
    if e.type.value != "enact":
        return
    pid = e.fields.bytes_("proposal", size=32)
    proposal = state.proposals.get(pid)
    window = rules_of(state.policy).veto_window_ms
    if proposal is None or proposed_at_ms is None:
        raise ClockSkewError(f"the relay has no record of when it stored proposal "
                             f"{pid.hex()[:12]}; its veto window cannot be measured")
    if now_ms < proposed_at_ms + window:
        raise ClockSkewError(f"proposal {pid.hex()[:12]} is still in its veto window by the "
                             f"relay's clock: it stored the proposal at {proposed_at_ms} ms, "
                             f"the window of {window // 1000} s ends at "
                             f"{proposed_at_ms + window} ms; enact it then")


def _propose(state: RegistryState, e: RegistryEntry) -> Proposal:
    if e.signer == state.account_id:
        raise AuthorizationError("the account key changes devices directly; it does not "
                                 "propose", Code.NOT_AUTHORIZED)
    rules = rules_of(state.policy)
    if not rules.governed:
        raise RegistryError("this account's policy does not require approval; append the "
                            "change directly")
    action = _parse_action(e.fields.raw("action"), state.limits)
    open_now = [p for p in state.proposals.values() if p.open_at(e.ts)]
    if len(open_now) >= MAX_PENDING:
        raise RegistryError(f"the account already has {MAX_PENDING} open proposals; approve, "
                            "veto or let them expire first")
    if action.type is ActionType.ADD:
        assert action.device is not None  # noqa: S101 - set by _parse_action for add
        device_id = action.device.device_id
        if device_id in state.devices or any(
                p.action.device is not None and p.action.device.device_id == device_id
                for p in open_now):
            raise RegistryError("that device is already in the registry or proposed")
        try:
            action.device.signing_key.verify(labelled(labels.REGISTRY_COSIG, e.body_bytes),
                                             e.countersignature or b"")
        except SignatureError:
            raise SignatureError("new device's countersignature does not verify") from None
    elif action.type is ActionType.REVOKE and not state.is_active(action.target or b""):
        raise RegistryError("revocation target is not an active device")
    return Proposal(e.hash, e.seq, e.ts, e.ts + rules.ttl_ms, e.signer, action,
                    frozenset({e.signer}))
