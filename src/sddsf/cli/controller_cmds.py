"""``sddsf alerts`` and ``sddsf audit``: the security controller, seen from a device."""

from __future__ import annotations

from typing import Any

import click

from sddsf.cli.device_cmds import _emit, _run, _with_device
from sddsf.cli.output import JSON_HELP, Out, iso_time
from sddsf.client.controller import verify_audit
from sddsf.client.device import Device
from sddsf.errors import UsageError
from sddsf.protocol.identity import fingerprint
from sddsf.wire import unb64

__all__ = ["register"]


def _when(ms: int | None) -> str | None:
    return iso_time(ms)


def _names(d: Device) -> dict[bytes, str]:
    return {r.device_id: r.name for r in d.registry().devices.values()}


@click.command()
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.option("--all", "include_acked", is_flag=True, help="Include acknowledged alerts.")
@click.option("--ack", "ack_id", help="Acknowledge the alert with this id (or id prefix).")
@click.pass_context
def alerts(ctx: click.Context, as_json: bool, include_acked: bool, ack_id: str | None) -> None:
    """The account's security alerts; --ack ID acknowledges one (lifting its quarantine)."""
    async def go(d: Device) -> list[dict[str, Any]]:
        await d.refresh_registry()
        names = _names(d)
        if ack_id:
            found = [a for a in await d.relay.alerts(include_acked=True)
                     if unb64(a["alert_id"]).hex().startswith(ack_id.lower())
                     or a["alert_id"] == ack_id]
            if len(found) != 1:
                raise UsageError(f"{ack_id!r} names {len(found)} alerts; see `sddsf alerts`")
            await d.relay.ack_alert(unb64(found[0]["alert_id"]))
        rows = await d.relay.alerts(include_acked=include_acked or bool(ack_id))
        out = []
        for a in rows:
            about = unb64(a["device"])
            out.append({"id": unb64(a["alert_id"]).hex(), "rule": a["rule"],
                        "severity": a["severity"], "message": a["message"],
                        "device": about.hex() or None,
                        "device_name": names.get(about) if about else None,
                        "quarantine": a["quarantine"], "created_at": _when(a["created_ms"]),
                        "acked_at": _when(a["acked_ms"])})
        return out

    rows = _run(_with_device(ctx, go))

    def render(c: Out) -> None:
        if not rows:
            c.line("no open alerts")
        for r in rows:
            who = f"device {r['device_name'] or r['device'][:12]}" if r["device"] else "account"
            state = (f"acknowledged {r['acked_at']}",) if r["acked_at"] else (
                ("bold red", "open"),)
            c.line(("bold", r["id"][:12]), f" {r['severity']} {r['rule']} ({who}) ", *state)
            c.line(f"    {r['message']}")
            if r["quarantine"] and not r["acked_at"]:
                c.line("    this device is quarantined (read-only) until the alert is "
                       f"acknowledged: `sddsf alerts --ack {r['id'][:12]}`")
            if r["device"] and not r["acked_at"]:
                c.line(f"    if you do not recognise this, revoke it (rotates every space's "
                       f"keys): `sddsf device revoke {r['device'][:12]}`")
    _emit(rows, as_json, render)


def _entry_row(e: Any, names: dict[bytes, str], seq: int) -> dict[str, Any]:
    data = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in e.data.items()}
    return {"seq": seq, "at": _when(e.ts), "kind": e.kind.value,
            "device": e.device.hex() or None, "device_name": names.get(e.device),
            "signed_by_device": bool(e.report), "data": data}


@click.command()
@click.option("--verify", is_flag=True,
              help="Verify the log against the relay's signed head and the heads this "
                   "device stored before (fails if the relay dropped or rewrote an event).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def audit(ctx: click.Context, verify: bool, as_json: bool) -> None:
    """The account's tamper-evident audit log of security events."""
    async def go(d: Device) -> dict[str, Any]:
        check = await verify_audit(d)
        names = _names(d)
        return {"verified": True, "size": check.size, "stored_heads_checked":
                check.heads_checked, "own_entries_checked": check.own_entries_checked,
                "entries": [_entry_row(e, names, i) for i, e in enumerate(check.entries)]}

    # Listing verifies too (a log that does not verify is never shown as if it
    # did); --verify only changes what is printed.
    info = _run(_with_device(ctx, go))

    def render(c: Out) -> None:
        if not verify:
            for r in info["entries"]:
                who = r["device_name"] or (fingerprint(bytes.fromhex(r["device"]))
                                           if r["device"] else "account")
                mark = " (signed by the device)" if r["signed_by_device"] else ""
                detail = ", ".join(f"{k}={v}" for k, v in sorted(r["data"].items()))
                c.line(f"{r['seq']:>5} {r['at']} {r['kind']:<16} {who}{mark} {detail}")
        c.line(f"audit log verified: {info['size']} entries; consistent with "
                f"{info['stored_heads_checked']} stored tree head(s); "
                f"{info['own_entries_checked']} of this device's own event(s) present")
    _emit(info, as_json, render)


def register(cli: click.Group) -> None:
    """Attach ``alerts`` and ``audit``."""
    cli.add_command(alerts)
    cli.add_command(audit)

