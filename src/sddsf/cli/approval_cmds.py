"""``sddsf device pending|approve|veto|policy``: k-of-n approval of device changes."""

from __future__ import annotations

from typing import Any

import click

from sddsf.cli.device_cmds import _emit, _run, _with_device
from sddsf.cli.output import JSON_HELP, Out, iso_time, say
from sddsf.client.device import Device
from sddsf.client.governance import ProposalView
from sddsf.errors import UsageError
from sddsf.protocol.approval import ActionType
from sddsf.protocol.identity import fingerprint

__all__ = ["pending_line", "register"]


def _when(ms: int) -> str:
    return iso_time(ms) or ""


def pending_line(v: ProposalView) -> str:
    """One sentence telling a person what a pending proposal still needs."""
    short = v.id_hex[:12]
    needs = (f"it has {v.have} of {v.need} approvals" if v.have < v.need
             else "it has its approvals")
    return (f"{needs}, its veto window ends {_when(v.opens_at)}, it expires "
            f"{_when(v.expires)}. Approve it on another device with `sddsf device approve "
            f"{short}` (or stop it with `sddsf device veto {short}`).")


def _describe(d: Device, v: ProposalView) -> dict[str, Any]:
    p, state = v.proposal, d.registry()

    def name(device_id: bytes) -> str:
        rec = state.device(device_id)
        return rec.name if rec else device_id.hex()[:12]
    a = p.action
    if a.type is ActionType.ADD and a.device is not None:
        what = f"add device {a.name!r} ({fingerprint(a.device.device_id)})"
    elif a.type is ActionType.REVOKE and a.target is not None:
        what = f"revoke {name(a.target)!r} ({a.reason})"
    else:
        what = f"set the policy to {dict(a.policy or {})}"
    return {"id": v.id_hex, "action": a.type.value, "what": what,
            "proposer": name(p.proposer), "approvals": sorted(name(x) for x in p.approvals),
            "have": v.have, "need": v.need, "proposed_at": _when(p.ts),
            "veto_window_ends": _when(v.opens_at), "expires": _when(v.expires),
            "ready": v.ready(d._clock())}


@click.command("pending")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def device_pending(ctx: click.Context, as_json: bool) -> None:
    """Open proposals to add or revoke a device or change the policy."""
    async def go(d: Device) -> list[dict[str, Any]]:
        await d.refresh_registry()
        return [_describe(d, v) for v in d.governance.open()]

    rows = _run(_with_device(ctx, go))

    def render(c: Out) -> None:
        if not rows:
            c.line("No open proposals.")
        for r in rows:
            c.line(("bold", r["id"][:12]), f" {r['what']} - proposed by {r['proposer']} at "
                   f"{r['proposed_at']}")
            c.line(f"    approvals {r['have']}/{r['need']} ({', '.join(r['approvals'])}); "
                   f"veto window ends {r['veto_window_ends']}; expires {r['expires']}",
                   *(("; ", ("green", "ready"), ": the next sync of any device enacts it")
                      if r["ready"] else ()))
    _emit(rows, as_json, render)


@click.command("approve")
@click.argument("ref")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def device_approve(ctx: click.Context, ref: str, yes: bool) -> None:
    """Approve a proposal (REF: a prefix of its id, or the device's name or id)."""
    async def go(d: Device) -> tuple[str, ProposalView | None]:
        await d.refresh_registry()
        p = d.governance.find(ref)
        what = _describe(d, d.governance.view(p))["what"]
        if not yes and not click.confirm(f"Approve: {what}?", default=False, err=True):
            raise UsageError("nothing approved")
        return what, (await d.governance.approve(p)).pending

    what, pending = _run(_with_device(ctx, go))
    if pending is None:
        say(f"Approved and carried out: {what}.")
    else:
        say(f"Approved: {what}; {pending_line(pending)}")


@click.command("veto")
@click.argument("ref")
@click.option("--reason", default="vetoed by the owner", show_default=True)
@click.pass_context
def device_veto(ctx: click.Context, ref: str, reason: str) -> None:
    """Veto a proposal: it can never be carried out."""
    async def go(d: Device) -> str:
        await d.refresh_registry()
        p = d.governance.find(ref)
        what: str = _describe(d, d.governance.view(p))["what"]
        await d.governance.veto(p, reason)
        return what

    say(f"Vetoed: {_run(_with_device(ctx, go))}.")


@click.command("policy")
@click.option("--approvals", type=click.IntRange(1, 16),
              help="Devices that must approve adding or revoking a device (1: off).")
@click.option("--veto-window", "veto_window_s", type=click.IntRange(0, 30 * 86_400),
              help="Seconds a proposal waits for a veto before it can be carried out.")
@click.option("--proposal-ttl", "ttl_s", type=click.IntRange(3_600, 90 * 86_400),
              help="Seconds after which an unapproved proposal expires (default 7 days).")
@click.option("--max-epoch-age", "max_epoch_age_s", type=click.IntRange(0, 10 * 365 * 86_400),
              help="Rotate every space's key when its epoch is older (0: never).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def device_policy(ctx: click.Context, approvals: int | None, veto_window_s: int | None,
                  ttl_s: int | None, max_epoch_age_s: int | None, as_json: bool) -> None:
    """Show the account's signed policy, or change it (a proposal if it requires approval)."""
    updates = {k: v for k, v in (("approvals", approvals), ("veto_window_s", veto_window_s),
                                 ("proposal_ttl_s", ttl_s),
                                 ("max_epoch_age_s", max_epoch_age_s)) if v is not None}

    async def go(d: Device) -> dict[str, Any]:
        state = await d.refresh_registry()
        pending = None
        if updates:
            merged = {k: v for k, v in state.policy.items() if isinstance(v, bool | int | str)}
            pending = (await d.set_policy({**merged, **updates})).pending
        return {"policy": dict(d.registry().policy),
                "pending": None if pending is None else pending_line(pending)}

    out = _run(_with_device(ctx, go))

    def render(c: Out) -> None:
        if out["pending"]:
            c.line(f"Proposed the policy change; {out['pending']}")
        policy = out["policy"]
        c.line("Policy: " + (", ".join(f"{k} = {v}" for k, v in sorted(policy.items()))
                              or "defaults (no approval needed, no scheduled rotation)"))
    _emit(out, as_json, render)


def register(device: click.Group) -> None:
    """Attach the approval commands to the ``device`` group."""
    for command in (device_pending, device_approve, device_veto, device_policy):
        device.add_command(command)
