"""k-of-n approval of device changes (sddsf.protocol.approval, registry §9.8).

A governed account (policy ``approvals`` > 1 or ``veto_window_s`` > 0) refuses
direct device changes signed by a device; proposals need enough approvals of
currently active devices and a passed veto window; vetoes, expiry and a revoked
proposer kill them; the target of a revocation cannot block it; the account key
is never governed. A Hypothesis property checks that one device acting alone,
with any sequence of entries and timestamps, never changes the device set.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import ACCOUNT, D1, D2, D3, D4, NOW_MS, Registry, base_registry, device
from sddsf.errors import AuthorizationError, Code, DecodeError, RegistryError, SddsfError
from sddsf.protocol import registry as reg
from sddsf.protocol.approval import MAX_PENDING, ActionType, ProposalStatus
from sddsf.protocol.identity import DeviceKeys

HOUR_MS = 3_600_000
GOVERNED = {"approvals": 2, "veto_window_s": 3600}


def governed(*, devices: int = 3, policy: dict[str, bool | int | str] | None = None,
             ) -> Registry:
    """D1, D2 (and D3) active; policy set by the account key at NOW+100."""
    r = base_registry()
    if devices >= 3:
        r = r.then(reg.add_device(r.state, D1, D3, "tablet", NOW_MS + 50))
    return r.then(reg.set_policy(r.state, ACCOUNT, policy or GOVERNED, NOW_MS + 100))


T0 = NOW_MS + 1_000


def add_d4(r: Registry, by: DeviceKeys = D1, ts: int = T0) -> tuple[Registry, bytes]:
    entry = reg.propose(r.state, by, ActionType.ADD,
                        {"device": reg.device_fields(D4.public, "watch")}, ts, new_device=D4)
    return r.then(entry), reg.entry_hash(entry)


def revoke_of(r: Registry, target: DeviceKeys, by: DeviceKeys = D1,
              ts: int = T0) -> tuple[Registry, bytes]:
    entry = reg.propose(r.state, by, ActionType.REVOKE,
                        {"target": target.device_id, "reason": "lost"}, ts)
    return r.then(entry), reg.entry_hash(entry)


def refused(r: Registry, entry: Callable[[reg.RegistryState], bytes], code: Code) -> None:
    with pytest.raises(SddsfError) as info:
        r.state.apply(entry(r.state))
    assert info.value.code is code, info.value.message


def test_direct_device_changes_by_a_device_are_refused_when_governed() -> None:
    r = governed()
    refused(r, lambda s: reg.add_device(s, D1, D4, "watch", T0), Code.NOT_AUTHORIZED)
    refused(r, lambda s: reg.revoke_device(s, D1, D2.device_id, "x", T0), Code.NOT_AUTHORIZED)
    refused(r, lambda s: reg.set_policy(s, D2, {}, T0), Code.NOT_AUTHORIZED)
    # The account key (recovery phrase) is never governed.
    after = r.then(reg.revoke_device(r.state, ACCOUNT, D2.device_id, "stolen", T0))
    assert not after.state.is_active(D2.device_id)


def test_add_needs_a_second_approval_and_the_veto_window() -> None:
    r, pid = add_d4(governed())
    assert not r.state.is_active(D4.device_id)
    p = r.state.proposals[pid]
    assert p.status is ProposalStatus.PENDING and p.approvals == {D1.device_id}
    assert reg.approval.tally(r.state, p) == (1, 2)
    refused(r, lambda s: reg.enact(s, D1, pid, T0 + 2 * HOUR_MS), Code.REGISTRY_INVALID)
    r = r.then(reg.approve(r.state, D2, pid, T0 + 10))
    refused(r, lambda s: reg.enact(s, D1, pid, T0 + HOUR_MS - 1), Code.REGISTRY_INVALID)
    r = r.then(reg.enact(r.state, D3, pid, T0 + HOUR_MS))
    rec = r.state.device(D4.device_id)
    assert rec is not None and r.state.is_active(D4.device_id)
    assert rec.added_by == D1.device_id and rec.added_seq == r.state.seq
    assert r.state.proposals[pid].status is ProposalStatus.ENACTED
    refused(r, lambda s: reg.enact(s, D1, pid, T0 + 2 * HOUR_MS), Code.REGISTRY_INVALID)
    # The whole chain verifies from genesis to the same state.
    again = reg.verify_registry(list(r.entries), pinned=ACCOUNT.public)
    assert again.head == r.state.head and again.is_active(D4.device_id)
    assert again.proposals[pid].status is ProposalStatus.ENACTED


def test_a_veto_kills_the_proposal() -> None:
    r, pid = add_d4(governed())
    r = r.then(reg.approve(r.state, D2, pid, T0 + 1))
    r = r.then(reg.veto(r.state, D3, pid, "I did not ask for a watch", T0 + 2))
    p = r.state.proposals[pid]
    assert p.status is ProposalStatus.VETOED and p.closed_by == D3.device_id
    assert p.veto_reason == "I did not ask for a watch"
    refused(r, lambda s: reg.enact(s, D1, pid, T0 + 2 * HOUR_MS), Code.REGISTRY_INVALID)
    refused(r, lambda s: reg.approve(s, D3, pid, T0 + 3), Code.REGISTRY_INVALID)
    assert r.state.open_proposals(T0 + 3) == []


def test_revocation_target_neither_counts_nor_blocks() -> None:
    r, pid = revoke_of(governed(), D2)
    refused(r, lambda s: reg.approve(s, D2, pid, T0 + 1), Code.NOT_AUTHORIZED)
    refused(r, lambda s: reg.veto(s, D2, pid, "no", T0 + 1), Code.NOT_AUTHORIZED)
    refused(r, lambda s: reg.enact(s, D1, pid, T0 + 2 * HOUR_MS), Code.REGISTRY_INVALID)
    r = r.then(reg.approve(r.state, D3, pid, T0 + 1))
    cutoff = {bytes(16): 7}
    r = r.then(reg.enact(r.state, D3, pid, T0 + HOUR_MS, cutoff))
    rec = r.state.device(D2.device_id)
    assert rec is not None and not r.state.is_active(D2.device_id)
    assert rec.revoked_by == D1.device_id and dict(rec.cutoff) == cutoff


def test_two_devices_the_owner_is_not_locked_out_by_the_lost_one() -> None:
    # approvals = 2 but only D1 can vote on revoking D2: D1 alone suffices,
    # once the veto window (in which D2 cannot veto) has passed.
    r, pid = revoke_of(governed(devices=2), D2)
    assert reg.approval.tally(r.state, r.state.proposals[pid]) == (1, 1)
    r = r.then(reg.enact(r.state, D1, pid, T0 + HOUR_MS))
    assert not r.state.is_active(D2.device_id)


def test_one_stolen_device_of_three_cannot_revoke_the_others() -> None:
    r, pid = revoke_of(governed(), D2, by=D3)
    refused(r, lambda s: reg.enact(s, D3, pid, T0 + 30 * HOUR_MS), Code.REGISTRY_INVALID)
    refused(r, lambda s: reg.approve(s, D3, pid, T0 + 1), Code.REGISTRY_INVALID)  # twice
    refused(r, lambda s: reg.approve(s, ACCOUNT, pid, T0 + 1),  # type: ignore[arg-type]
            Code.NOT_AUTHORIZED)
    assert r.state.is_active(D2.device_id)


def test_revoked_proposer_voids_the_proposal_and_its_approvals_stop_counting() -> None:
    r, pid = add_d4(governed())
    r = r.then(reg.approve(r.state, D2, pid, T0 + 1))
    r2, rid = revoke_of(r, D1, by=D2, ts=T0 + 2)
    r2 = r2.then(reg.approve(r2.state, D3, rid, T0 + 3))
    r2 = r2.then(reg.enact(r2.state, D2, rid, T0 + 2 + HOUR_MS))
    assert not r2.state.is_active(D1.device_id)
    refused(r2, lambda s: reg.enact(s, D2, pid, T0 + 3 * HOUR_MS), Code.REGISTRY_INVALID)
    # D3 proposes revoking D2; D1's earlier standing no longer matters: needs D3 + one more.
    r3, qid = revoke_of(r2, D2, by=D3, ts=T0 + 3 * HOUR_MS)
    assert reg.approval.tally(r3.state, r3.state.proposals[qid]) == (1, 1)


def test_expired_proposals_can_no_longer_be_approved_or_enacted() -> None:
    r, pid = add_d4(governed())
    expires = r.state.proposals[pid].expires
    assert expires == T0 + 7 * 24 * HOUR_MS
    refused(r, lambda s: reg.approve(s, D2, pid, expires + 1), Code.REGISTRY_INVALID)
    assert r.state.open_proposals(expires + 1) == []


def test_approval_entry_times_may_not_go_back() -> None:
    r, pid = add_d4(governed())
    late = r.then(reg.approve(r.state, D2, pid, T0 + 5 * HOUR_MS))
    body = reg.build_body(reg.EntryType.ENACT, account_id=late.state.account_id,
                          seq=late.state.seq + 1, prev=late.state.head, ts_ms=T0 + HOUR_MS,
                          signer_id=D1.device_id, fields={"proposal": pid, "cutoff": []})
    backdated = reg.assemble_entry(body, reg.sign_body(body, D1))
    with pytest.raises(RegistryError, match="time may not go back"):
        late.state.apply(backdated)


def test_policy_changes_are_governed_too() -> None:
    r = governed()
    entry = reg.propose(r.state, D1, ActionType.POLICY, {"policy": {"approvals": 1}}, T0)
    r, pid = r.then(entry), reg.entry_hash(entry)
    r = r.then(reg.approve(r.state, D2, pid, T0 + 1))
    r = r.then(reg.enact(r.state, D2, pid, T0 + HOUR_MS))
    assert dict(r.state.policy) == {"approvals": 1} and not r.state.rules().governed
    # Ungoverned again: a device may change devices directly, and may not propose.
    r = r.then(reg.add_device(r.state, D2, D4, "watch", T0 + HOUR_MS + 1))
    refused(r, lambda s: reg.propose(s, D1, ActionType.REVOKE,
                                     {"target": D4.device_id, "reason": "x"}, T0 + 2 * HOUR_MS),
            Code.REGISTRY_INVALID)


def test_who_may_sign_which_approval_entry() -> None:
    r = governed()
    refused(r, lambda s: reg.propose(s, ACCOUNT,  # type: ignore[arg-type]
                                     ActionType.REVOKE, {"target": D2.device_id, "reason": "x"},
                                     T0), Code.NOT_AUTHORIZED)
    r, pid = add_d4(r)
    outsider = device(40)
    refused(r, lambda s: reg.approve(s, outsider, pid, T0 + 1), Code.NOT_AUTHORIZED)
    vetoed = r.then(reg.veto(r.state, ACCOUNT, pid, "not mine", T0 + 1))
    assert vetoed.state.proposals[pid].status is ProposalStatus.VETOED
    r = r.then(reg.approve(r.state, D2, pid, T0 + 1))
    r = r.then(reg.enact(r.state, ACCOUNT, pid, T0 + HOUR_MS))  # the account may enact
    assert r.state.is_active(D4.device_id)
    refused(r, lambda s: reg.enact(s, D1, bytes(32), T0 + HOUR_MS), Code.REGISTRY_INVALID)


def test_add_proposals_need_the_new_devices_countersignature() -> None:
    r = governed()
    body = reg.build_body(reg.EntryType.PROPOSE, account_id=r.state.account_id,
                          seq=r.state.seq + 1, prev=r.state.head, ts_ms=T0,
                          signer_id=D1.device_id, fields={"action": reg.approval.action_field(
                              ActionType.ADD, {"device": reg.device_fields(D4.public, "w")})})
    with pytest.raises(DecodeError, match="countersignature is required"):
        r.state.apply(reg.assemble_entry(body, reg.sign_body(body, D1)))
    wrong = reg.assemble_entry(body, reg.sign_body(body, D1), reg.countersign_body(body, D3))
    refused(r, lambda s: wrong, Code.SIG_INVALID)
    refused(r, lambda s: reg.propose(s, D1, ActionType.REVOKE,
                                     {"target": D4.device_id, "reason": "x"}, T0),
            Code.REGISTRY_INVALID)  # not a device of the account
    r, _ = add_d4(r)
    refused(r, lambda s: add_d4(Registry((), s), by=D2, ts=T0 + 1)[0].entries[-1],
            Code.REGISTRY_INVALID)  # already proposed


def test_malformed_actions_and_policies_are_refused() -> None:
    r = governed()
    for action in ({"type": "promote"}, {"type": "revoke", "target": D2.device_id},
                   {"type": "policy", "policy": {"approvals": 0}},
                   {"type": "policy", "policy": {"veto_window_s": 7200, "proposal_ttl_s": 3600}}):
        body = reg.build_body(reg.EntryType.PROPOSE, account_id=r.state.account_id,
                              seq=r.state.seq + 1, prev=r.state.head, ts_ms=T0,
                              signer_id=D1.device_id, fields={"action": action})
        with pytest.raises(DecodeError):
            r.state.apply(reg.assemble_entry(body, reg.sign_body(body, D1)))
    r, pid = add_d4(r)
    r = r.then(reg.approve(r.state, D2, pid, T0 + 1))
    with pytest.raises(DecodeError, match="cutoff only goes with a revocation"):
        r.state.apply(reg.enact(r.state, D1, pid, T0 + HOUR_MS, {bytes(16): 1}))


def test_open_proposals_are_bounded() -> None:
    r = governed()
    for i in range(MAX_PENDING):
        new = device(50 + i)
        r = r.then(reg.propose(r.state, D1, ActionType.ADD,
                               {"device": reg.device_fields(new.public, f"d{i}")}, T0 + i,
                               new_device=new))
    assert len(r.state.open_proposals(T0 + MAX_PENDING)) == MAX_PENDING
    refused(r, lambda s: add_d4(Registry((), s), ts=T0 + MAX_PENDING)[0].entries[-1],
            Code.REGISTRY_INVALID)


# -------------------------------------------------------------- property

_THIEF = D3


def _attempt(state: reg.RegistryState, kind: int, arg: int, ts: int) -> bytes:
    pids = sorted(state.proposals) or [bytes(32)]
    pid = pids[arg % len(pids)]
    if kind == 0:
        target = (D1, D2)[arg % 2]
        return reg.propose(state, _THIEF, ActionType.REVOKE,
                           {"target": target.device_id, "reason": "x"}, ts)
    if kind == 1:
        new = device(60 + arg % 5)
        return reg.propose(state, _THIEF, ActionType.ADD,
                           {"device": reg.device_fields(new.public, "x")}, ts, new_device=new)
    if kind == 2:
        return reg.propose(state, _THIEF, ActionType.POLICY, {"policy": {}}, ts)
    if kind == 3:
        return reg.approve(state, _THIEF, pid, ts)
    if kind == 4:
        return reg.enact(state, _THIEF, pid, ts)
    if kind == 5:
        return reg.add_device(state, _THIEF, device(70), "x", ts)
    return reg.revoke_device(state, _THIEF, (D1, D2)[arg % 2].device_id, "x", ts)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 20),
                          st.integers(0, 40 * 24 * HOUR_MS)), max_size=12))
def test_one_device_alone_never_changes_a_governed_device_set(
        steps: list[tuple[int, int, int]]) -> None:
    r = governed()
    devices_before = {d: rec.status for d, rec in r.state.devices.items()}
    state = r.state
    for kind, arg, dt in steps:
        try:
            state = state.apply(_attempt(state, kind, arg, T0 + dt))
        except (RegistryError, AuthorizationError, DecodeError):
            continue
    assert {d: rec.status for d, rec in state.devices.items()} == devices_before
    assert dict(state.policy) == GOVERNED
