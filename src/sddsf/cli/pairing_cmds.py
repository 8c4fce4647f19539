"""``sddsf device ...``: pair (add/join), list and revoke devices."""

from __future__ import annotations

import io
import os
from typing import Any

import click
import segno

from sddsf.cli import approval_cmds
from sddsf.cli.approval_cmds import pending_line
from sddsf.cli.device_cmds import _emit, _home, _passphrase, _run, _with_device
from sddsf.cli.output import JSON_HELP, Out, iso_time, say
from sddsf.client.device import Device
from sddsf.client.governance import ProposalView
from sddsf.client.pairing import PairingInvite, add_device, join
from sddsf.errors import NotFoundError, UsageError
from sddsf.protocol.identity import fingerprint
from sddsf.protocol.registry import DeviceRecord
from sddsf.wire import unb64

__all__ = ["register"]


def _sas_prompt(yes: bool):  # type: ignore[no-untyped-def]
    def confirm(words: tuple[str, ...]) -> bool:
        click.echo(f"Check that the other device shows the same words:\n\n    "
                   f"{' '.join(words)}\n", err=True)
        if yes:
            return True
        return click.confirm("Do the words match?", default=False, err=True)
    return confirm


@click.group()
def device() -> None:
    """Pair, list and revoke this account's devices."""


@device.command("add")
@click.option("--code-out", type=click.Path(dir_okay=False),
              help="Also write the pairing code to this file (mode 0600), for scripts.")
@click.option("--yes", is_flag=True, help="Accept the words without asking (scripts).")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True,
              help="Seconds to wait for the new device.")
@click.pass_context
def device_add(ctx: click.Context, code_out: str | None, yes: bool, timeout_s: float) -> None:
    """Show a one-time pairing code (and QR code), then add the device that joins with it."""
    def show(invite: PairingInvite) -> None:
        if code_out:
            fd = os.open(code_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(invite.code + "\n")
        qr = io.StringIO()
        segno.make(invite.uri, error="m").terminal(out=qr, compact=True)
        click.echo(qr.getvalue(), err=True)
        click.echo(f"Pairing code (valid for {timeout_s:.0f} s at most, single use):\n\n"
                   f"    {invite.code}\n\nOn the new device run:\n    sddsf device join "
                   f"{invite.code} --relay {invite.relay_url} --name NAME\n", err=True)

    async def go(d: Device) -> dict[str, Any]:
        await d.sync()  # push this device's pending edits first: the new one gets them at once
        new_id, change = await add_device(d, show=show, confirm_sas=_sas_prompt(yes),
                                          timeout_s=timeout_s)
        rec = d.registry().device(new_id)
        name = rec.name if rec else change.pending.proposal.action.name if change.pending else ""
        return {"device_id": new_id.hex(), "name": name, "fingerprint": fingerprint(new_id),
                "pending": change.pending}

    info = _run(_with_device(ctx, go))
    if info["pending"] is not None:
        say(f"Proposed adding device {info['name']!r} ({info['fingerprint']}); "
            f"{pending_line(info['pending'])}")
        return
    say(f"Added device {info['name']!r} ({info['fingerprint']}); every space now has a "
        "new key epoch that includes it.")


@device.command("join")
@click.argument("code")
@click.option("--relay", "relay_url", required=True, help="The relay the other device uses.")
@click.option("--name", required=True, help="This device's name.")
@click.option("--yes", is_flag=True, help="Accept the words without asking (scripts).")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True,
              help="Seconds to wait for the other device.")
@click.option("--insecure-plaintext-key", is_flag=True,
              help="INSECURE: keep the store key in plaintext (no keyring, no passphrase).")
@click.pass_context
def device_join(ctx: click.Context, code: str, relay_url: str, name: str, yes: bool,
                timeout_s: float, insecure_plaintext_key: bool) -> None:
    """Join an account with the pairing code another device shows."""
    async def go() -> tuple[str, int, ProposalView | None]:
        d = await join(_home(ctx), relay_url, code, name,
                       passphrase=None if insecure_plaintext_key else _passphrase(confirm=True),
                       confirm_sas=_sas_prompt(yes), insecure_plaintext=insecure_plaintext_key,
                       timeout_s=timeout_s)
        result = d.account.fingerprint, len(d.spaces()), d.awaiting_approval()
        await d.close()
        return result

    account, spaces, waiting = _run(go())
    if waiting is not None:
        say(f"Paired with account {account}, but this account requires approval: "
            f"{pending_line(waiting)} Then run `sddsf sync` here.")
        return
    click.echo(f"Joined account {account}; {spaces} space(s) synced.")


def _row(rec: DeviceRecord, names: dict[bytes, str], seen: dict[bytes, int],
         me: bytes) -> dict[str, Any]:
    when = iso_time
    return {
        "id": rec.device_id.hex(), "name": rec.name, "fingerprint": fingerprint(rec.device_id),
        "added_by": names.get(rec.added_by, "the account key"),
        "added_at": when(rec.added_ts), "last_seen": when(seen.get(rec.device_id)),
        "status": rec.status.value, "this_device": rec.device_id == me,
    }


@device.command("list")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def device_list(ctx: click.Context, as_json: bool) -> None:
    """Devices of this account: name, fingerprint, added by/at, last seen, status,
    and the relay's trust score with the factors that explain it."""
    async def go(d: Device) -> list[dict[str, Any]]:
        state = await d.refresh_registry()
        names = {r.device_id: r.name for r in state.devices.values()}
        rows = [_row(r, names, d.last_seen(), d.device_id)
                for r in sorted(state.devices.values(), key=lambda r: r.added_seq)]
        try:
            trust = {unb64(t["device_id"]).hex(): t for t in await d.relay.device_trust()}
        except NotFoundError:  # a relay without the controller
            trust = {}
        for row in rows:
            t = trust.get(row["id"], {})
            row.update(trust=t.get("score"), access=t.get("access"),
                       quarantined=t.get("quarantined", False),
                       trust_factors=t.get("factors", []))
        return rows

    rows = _run(_with_device(ctx, go))

    def render(c: Out) -> None:
        for r in rows:
            mark = " (this device)" if r["this_device"] else ""
            colour = "green" if r["status"] == "active" else "red"
            c.line(("bold", r["name"]), f"{mark} ", (colour, r["status"]), f"  {r['fingerprint']}")
            c.line(f"    added by {r['added_by']} at {r['added_at']}; last seen "
                   f"{r['last_seen'] or 'never (by this device)'}")
            if r["trust"] is not None:
                q = ", quarantined" if r["quarantined"] else ""
                c.line(f"    trust {r['trust']}/100 ({r['access']}{q})" + "".join(
                    f"; {f['name']} {f['points']}: {f['detail']}" for f in r["trust_factors"]))
    _emit(rows, as_json, render)


def _resolve(d: Device, who: str) -> DeviceRecord:
    # A device is named by its name, or by a prefix of its hex id or fingerprint.
    key = who.strip().lower().replace("-", "")
    matches = [r for r in d.registry().devices.values()
               if r.name == who or (len(key) >= 6 and (
                   r.device_id.hex().startswith(key)
                   or fingerprint(r.device_id).replace("-", "").lower().startswith(key)))]
    if not matches:
        raise UsageError(f"no device {who!r} in this account; see `sddsf device list`")
    if len(matches) > 1:
        raise UsageError(f"{who!r} names {len(matches)} devices; use more of its id")
    return matches[0]


@device.command("revoke")
@click.argument("who")
@click.option("--reason", default="revoked by the owner", show_default=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def device_revoke(ctx: click.Context, who: str, reason: str, yes: bool) -> None:
    """Revoke a device: its writes are refused, its sessions end, and every space
    moves to a new key epoch it cannot read."""
    async def go(d: Device) -> tuple[str, int, ProposalView | None]:
        await d.sync()  # the cutoff keeps everything of it this device has seen
        rec = _resolve(d, who)
        if rec.device_id == d.device_id:
            raise UsageError("this device cannot revoke itself; revoke it from another one")
        if rec.status.value != "active":
            raise UsageError(f"device {rec.name!r} is already revoked")
        if not yes and not click.confirm(f"Revoke {rec.name!r} ({fingerprint(rec.device_id)})?",
                                         default=False, err=True):
            raise UsageError("nothing revoked")
        change = await d.revoke(rec.device_id, reason)
        return rec.name, len(d.spaces()), change.pending

    name, spaces, pending = _run(_with_device(ctx, go))
    if pending is not None:
        say(f"Proposed revoking {name!r}; {pending_line(pending)}")
        return
    say(f"Revoked {name!r}; {spaces} space(s) moved to a new key epoch.")


def register(cli: click.Group) -> None:
    """Attach the ``device`` group."""
    approval_cmds.register(device)
    cli.add_command(device)

