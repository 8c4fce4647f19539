"""``sddsf alerts`` and ``sddsf audit``: the security controller, seen from a device."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import click

from sddsf.cli.device_cmds import _emit, _run, _with_device
from sddsf.cli.output import JSON_HELP, Out, iso_time
from sddsf.cli.recovery_cmds import _account_secret
from sddsf.client.controller import verify_audit
from sddsf.client.device import Device
from sddsf.client.results import Alert, DeviceTrust
from sddsf.errors import AuthorizationError, Code, UsageError
from sddsf.protocol.identity import AccountKeys, fingerprint
from sddsf.wire import b64

__all__ = ["register"]


def _when(ms: int | None) -> str | None:
    return iso_time(ms)


def _names(d: Device) -> dict[bytes, str]:
    return {r.device_id: r.name for r in d.registry().devices.values()}


@dataclass
class _View:
    """What the text view needs to suggest only commands that work here."""

    me: str
    my_access: str | None
    active: set[str]


@click.command()
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.option("--all", "include_acked", is_flag=True, help="Include acknowledged alerts.")
@click.option("--ack", "ack_id", help="Acknowledge the alert with this id (or id prefix); "
                                      "with --phrase also `all`: every open alert.")
@click.option("--phrase", "with_phrase", is_flag=True,
              help="Acknowledge with the account key (asks for the 24-word recovery phrase): "
                   "lifts any quarantine, also one of this device or the only device.")
@click.option("--phrase-file", type=click.Path(dir_okay=False),
              help="File holding the recovery phrase (implies --phrase).")
@click.pass_context
def alerts(ctx: click.Context, as_json: bool, include_acked: bool, ack_id: str | None,
           with_phrase: bool, phrase_file: str | None) -> None:
    """The account's security alerts; --ack ID acknowledges one (lifting its quarantine)."""
    by_account = with_phrase or phrase_file is not None
    if by_account and not ack_id:
        raise UsageError("--phrase acknowledges alerts: give --ack ID (or --ack all)")
    if ack_id == "all" and not by_account:
        raise UsageError("--ack all needs the account key: add --phrase")

    async def go(d: Device) -> tuple[list[dict[str, Any]], _View]:
        # The rows are built here from the typed alerts: the --json shape is the CLI's.
        try:
            await d.refresh_registry()
        except AuthorizationError as exc:
            # A denied device can still acknowledge with the account key.
            if not by_account or exc.code is not Code.POLICY_DENIED:
                raise
        acked: list[Alert] = []
        trust: list[DeviceTrust]
        if ack_id and by_account:
            account = AccountKeys.from_secret(_account_secret(d.account.account_id,
                                                              phrase_file))
            ids = [] if ack_id == "all" else [await _alert_id(d, ack_id)]
            acked = await d.relay.ack_alerts_as_account(account, ids)
        elif ack_id:
            await d.relay.ack_alert(await _alert_id(d, ack_id))
        try:
            raw = await d.relay.alerts(include_acked=include_acked or bool(ack_id))
            trust = await d.relay.device_trust()
        except AuthorizationError:
            if not acked:
                raise
            raw, trust = acked, []  # still denied for other reasons: show what was done
        mine = next((t for t in trust if t.device_id == d.device_id), None)
        state = d.registry()
        view = _View(d.device_id.hex(), mine.access if mine else None,
                     {r.device_id.hex() for r in state.active_devices()})
        return [_row(a, _names(d)) for a in raw], view

    rows, view = _run(_with_device(ctx, go))

    def render(c: Out) -> None:
        if not rows:
            c.line("no open alerts")
        for r in rows:
            who = f"device {r['device_name'] or r['device'][:12]}" if r["device"] else "account"
            state = (f"acknowledged {r['acked_at']}",) if r["acked_at"] else (
                ("bold red", "open"),)
            c.line(("bold", r["id"][:12]), f" {r['severity']} {r['rule']} ({who}) ", *state)
            c.line(f"    {r['message']}")
            if not r["acked_at"]:
                _suggest(c, r, view)
    _emit(rows, as_json, render)


def _row(a: Alert, names: dict[bytes, str]) -> dict[str, Any]:
    about = a.device_id
    return {"id": a.alert_id.hex(), "rule": a.rule, "severity": a.severity,
            "message": a.message, "device": about.hex() or None,
            "device_name": names.get(about) if about else None,
            "quarantine": a.quarantine,
            "quarantine_until": _when(a.quarantine_until_ms),
            "quarantined": (a.quarantine_until_ms or 0) > time.time() * 1000,
            "created_at": _when(a.created_ms), "acked_at": _when(a.acked_ms)}


def _suggest(c: Out, r: dict[str, Any], view: _View) -> None:
    # Only commands that work from this device (a device cannot clear an alert
    # about itself, a read-only one cannot acknowledge or revoke: the account key can).
    short = r["id"][:12]
    full = view.my_access == "full"
    if r["quarantined"]:
        c.line(f"    {'this' if r['device'] == view.me else 'that'} device is quarantined "
                "(read-only) until acknowledged,")
        c.line(f"    or until {r['quarantine_until']}. To acknowledge it:")
        if r["device"] != view.me and full:
            c.line(f"      `sddsf alerts --ack {short}`")
        c.line("    with the account key (asks for the recovery phrase, or --phrase-file):")
        c.line(f"      `sddsf alerts --ack {short} --phrase`")
    if r["device"] and r["device"] != view.me and r["device"] in view.active and full:
        c.line("    if you do not recognise this, revoke it (rotates every space's keys):")
        c.line(f"      `sddsf device revoke {r['device'][:12]}`")


async def _alert_id(d: Device, given: str) -> bytes:
    if len(given) == 32:  # a whole id: no need to list (a denied device cannot)
        try:
            return bytes.fromhex(given)
        except ValueError:
            pass
    found = [a for a in await d.relay.alerts(include_acked=True)
             if a.alert_id.hex().startswith(given.lower()) or b64(a.alert_id) == given]
    if len(found) != 1:
        raise UsageError(f"{given!r} names {len(found)} alerts; see `sddsf alerts`")
    return found[0].alert_id


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

