"""The security controller's API: device reports, trust, alerts, the audit log and
the signed encryption policy (docs/controller.md, docs/protocol.md 17.4.10)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from sddsf.errors import NotFoundError
from sddsf.protocol.identity import ID_SIZE
from sddsf.protocol.posture import decode_report
from sddsf.protocol.registry import DeviceStatus
from sddsf.relay import models as m
from sddsf.relay.deps import Authed, Ctx, RelayContext, limit_ip, tree_head_out
from sddsf.relay.storage.base import AlertRecord

__all__ = ["router"]

router = APIRouter()
#: An optional tree size in a query (default: the current size).
OptionalSize = Annotated[m.DecimalInt | None, Query(ge=1, le=m.INT64_MAX)]
_MAX_AUDIT_PAGE = 1000


def _alert_out(ctx: RelayContext, a: AlertRecord) -> m.AlertOut:
    return m.AlertOut(alert_id=m.b64(a.alert_id), device=m.b64(a.device_id), rule=a.rule,
                      severity=a.severity, message=a.message, quarantine=a.quarantine,
                      quarantine_until_ms=ctx.controller.quarantine_ends_ms(a),
                      created_ms=a.created_ms, acked_ms=a.acked_ms,
                      acked_by=m.b64(a.acked_by) if a.acked_by else None)


@router.post("/v1/accounts/{account_id}/reports", response_model=m.ReportOut,
             tags=["controller"], dependencies=[Depends(limit_ip)])
async def submit_report(account_id: str, body: m.ReportIn, ctx: Ctx) -> m.ReportOut:
    """Submit a device-signed report (posture, pairing, tombstones). Self-authenticating,
    so a device the policy denies can still send a better posture; accepted fresh
    (within ``request_window_s``) and once (a copy is ``replay``)."""
    aid = m.unb64(account_id, "account id", size=ID_SIZE)
    outcome = await ctx.controller.submit_report(aid, m.unb64(body.report, "report"))
    proof, entry = None, None
    if outcome.audit_seq is not None:
        head, tree = await ctx.controller.audit_head(aid)
        proof = m.Proof(proof=[m.b64(p) for p in tree.inclusion_proof(outcome.audit_seq)],
                        tree_head=tree_head_out(head))
        [(_, raw)] = await ctx.storage.audit_entries(aid, outcome.audit_seq, 1)
        entry = m.b64(raw)
    return m.ReportOut(kind=outcome.kind.value, stored=outcome.stored,
                       audit_seq=outcome.audit_seq, entry=entry, proof=proof)


@router.get("/v1/controller/devices", response_model=m.DevicesTrustOut, tags=["controller"])
async def devices(caller: Authed, ctx: Ctx) -> m.DevicesTrustOut:
    """Every device of the account with its trust score, access level and factors."""
    aid = caller.session.account_id
    registry = await ctx.fabric.registries.get(aid)
    postures = await ctx.storage.postures(aid)
    out: list[m.DeviceTrustOut] = []
    for rec in sorted(registry.devices.values(), key=lambda r: r.added_seq):
        posture = None
        stored = postures.get(rec.device_id)
        if stored is not None and (p := decode_report(stored.report).posture) is not None:
            posture = m.PostureOut(os=p.os, os_version=p.os_version, app_version=p.app_version,
                                   package_hash=m.b64(p.package_hash),
                                   key_storage=p.key_storage, rooted=p.rooted,
                                   attestation=p.attestation, ts_ms=stored.ts_ms)
        active = rec.status is DeviceStatus.ACTIVE
        score = await ctx.controller.trust(aid, rec.device_id) if active else None
        out.append(m.DeviceTrustOut(
            device_id=m.b64(rec.device_id), name=rec.name, status=rec.status.value,
            score=score.score if score else None, access=score.access.value if score else None,
            quarantined=score.quarantined if score else False,
            factors=[m.FactorOut(name=f.name, points=f.points, detail=f.detail)
                     for f in (score.factors if score else ())], posture=posture))
    return m.DevicesTrustOut(devices=out)


@router.get("/v1/controller/alerts", response_model=m.AlertsOut, tags=["controller"])
async def alerts(caller: Authed, ctx: Ctx,
                 everything: Annotated[m.PlainBool, Query(alias="all")] = False
                 ) -> m.AlertsOut:
    """The account's open alerts (``all=true``: acknowledged ones too), oldest first."""
    found = await ctx.controller.alerts(caller.session.account_id, include_acked=everything)
    return m.AlertsOut(alerts=[_alert_out(ctx, a) for a in found])


@router.post("/v1/controller/alerts/{alert_id}/ack", response_model=m.AlertOut,
             tags=["controller"])
async def acknowledge(alert_id: str, caller: Authed, ctx: Ctx) -> m.AlertOut:
    """Acknowledge an alert (from another device with full access); lifts its quarantine."""
    a = await ctx.controller.acknowledge(caller.session.account_id,
                                         m.unb64(alert_id, "alert id", size=16),
                                         caller.session.device_id)
    return _alert_out(ctx, a)


@router.post("/v1/accounts/{account_id}/alerts/ack", response_model=m.AlertsOut,
             tags=["controller"], dependencies=[Depends(limit_ip)])
async def acknowledge_as_account(account_id: str, body: m.AccountAckIn,
                                 ctx: Ctx) -> m.AlertsOut:
    """Acknowledge alerts with the account key (the owner's way out of any
    quarantine, also of the account's only device); no session needed."""
    aid = m.unb64(account_id, "account id", size=ID_SIZE)
    acked = await ctx.controller.acknowledge_as_account(
        aid, [m.unb64(a, "alert id", size=16) for a in body.alert_ids], body.ts_ms,
        m.unb64(body.signature, "signature", size=64))
    return m.AlertsOut(alerts=[_alert_out(ctx, a) for a in acked])


@router.get("/v1/controller/audit", response_model=m.AuditPage, tags=["controller"])
async def audit_entries(caller: Authed, ctx: Ctx,
                        start: Annotated[m.DecimalInt, Query(ge=0, le=m.INT64_MAX)] = 0,
                        limit: Annotated[m.DecimalInt, Query(ge=1, le=_MAX_AUDIT_PAGE)] = 500
                        ) -> m.AuditPage:
    """Audit entries from ``start`` and the signed head of the whole log (read after)."""
    aid = caller.session.account_id
    rows = await ctx.storage.audit_entries(aid, start, limit)
    head, _ = await ctx.controller.audit_head(aid)
    return m.AuditPage(entries=[m.AuditEntryOut(seq=q, entry=m.b64(e)) for q, e in rows],
                       tree_head=tree_head_out(head),
                       next_start=rows[-1][0] + 1 if rows else start)


@router.get("/v1/controller/audit/tree-head", response_model=m.TreeHeadOut,
            tags=["controller"])
async def audit_tree_head(caller: Authed, ctx: Ctx) -> m.TreeHeadOut:
    """The account's current signed audit tree head (log id ``sddsf/audit/`` + account)."""
    head, _ = await ctx.controller.audit_head(caller.session.account_id)
    return tree_head_out(head)


@router.get("/v1/controller/audit/proofs/inclusion", response_model=m.Proof,
            tags=["controller"])
async def audit_inclusion(caller: Authed, ctx: Ctx,
                          index: Annotated[m.DecimalInt, Query(ge=0, le=m.INT64_MAX)],
                          size: OptionalSize = None
                          ) -> m.Proof:
    """Inclusion proof of audit entry ``index`` in the log of ``size`` (default: current)."""
    head, tree = await ctx.controller.audit_head(caller.session.account_id, size)
    if index >= tree.size:
        raise NotFoundError(f"the audit log has {tree.size} entries")
    return m.Proof(proof=[m.b64(p) for p in tree.inclusion_proof(index)],
                   tree_head=tree_head_out(head))


@router.get("/v1/controller/audit/proofs/consistency", response_model=m.Proof,
            tags=["controller"])
async def audit_consistency(caller: Authed, ctx: Ctx,
                            first: Annotated[m.DecimalInt, Query(ge=1, le=m.INT64_MAX)],
                            second: OptionalSize = None
                            ) -> m.Proof:
    """Consistency proof between audit log sizes ``first`` and ``second`` (default: current)."""
    head, tree = await ctx.controller.audit_head(caller.session.account_id, second)
    if first > tree.size:
        raise NotFoundError(f"need first <= second <= {tree.size}")
    return m.Proof(proof=[m.b64(p) for p in tree.consistency_proof(first)],
                   tree_head=tree_head_out(head))


@router.get("/v1/controller/encryption-policy", response_model=m.EncryptionPolicyOut,
            tags=["controller"], dependencies=[Depends(limit_ip)])
async def encryption_policy(ctx: Ctx) -> m.EncryptionPolicyOut:
    """The relay's encryption policy, signed with its tree-head key."""
    return m.EncryptionPolicyOut(policy=m.b64(ctx.controller.encryption_policy()))

