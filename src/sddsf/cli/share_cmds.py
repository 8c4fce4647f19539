"""Sharing spaces between people: ``sddsf account fingerprint`` and ``sddsf space
share/join/members/role/remove/leave`` (thin commands over ``device.sharing``)."""

from __future__ import annotations

import io
from typing import Any

import click
import segno

from sddsf.cli.device_cmds import _emit, _lines, _run, _with_device, space
from sddsf.cli.output import JSON_HELP, say
from sddsf.cli.pairing_cmds import _ask
from sddsf.client.device import Device
from sddsf.client.engine.common import SyncReport
from sddsf.client.invite import InviteCheck, InviteCode, accept_invite, invite
from sddsf.client.sharing import account_code
from sddsf.errors import NotFoundError, UsageError
from sddsf.protocol.membership import Role

__all__ = ["register"]

_ROLES = click.Choice([r.value for r in Role])


@click.group("account")
def account() -> None:
    """This device's account: what to show people who share spaces with you."""


@account.command("fingerprint")
@click.option("--qr", is_flag=True, help="Also show the account code as a QR code.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def account_fingerprint(ctx: click.Context, qr: bool, as_json: bool) -> None:
    """Show the account's fingerprint (compare it aloud) and account code (send it).

    A person shares a space with you by your fingerprint (their relay finds the
    account, their device checks it) or by your account code (which holds your
    account's public keys: nothing secret).
    """
    async def go(d: Device) -> dict[str, str]:
        return {"fingerprint": d.account.fingerprint, "account_code": account_code(d.account),
                "account_id": d.account.account_id.hex()}

    info = _run(_with_device(ctx, go))
    if qr and not as_json:
        out = io.StringIO()
        segno.make(info["account_code"], error="m").terminal(out=out, compact=True)
        click.echo(out.getvalue(), err=True)
    _emit(info, as_json, lambda c: _lines(c, [f"fingerprint:  {info['fingerprint']}",
                                              f"account code: {info['account_code']}"]))


def _report_line(report: SyncReport) -> str:
    return f"{report.rotated} space(s) moved to a new key" if report.rotated else "synced"


@space.command("share")
@click.argument("name")
@click.option("--with", "who", metavar="FINGERPRINT|CODE",
              help="The person's account fingerprint (as `sddsf account fingerprint` shows "
                   "it on their device: compare every group) or account code.")
@click.option("--invite", is_flag=True,
              help="Instead of --with: show a one-time code the person enters with "
                   "`sddsf space join CODE`; both screens then show words to compare.")
@click.option("--role", type=_ROLES, default=Role.WRITER.value, show_default=True,
              help="reader: reads only; writer: reads and writes; admin: also shares.")
@click.option("--yes", is_flag=True, help="--invite: accept the words without asking.")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True,
              help="--invite: seconds to wait for the person.")
@click.pass_context
def space_share(ctx: click.Context, name: str, who: str | None, invite: bool, role: str,
                yes: bool, timeout_s: float) -> None:
    """Share the space NAME with another person's account.

    Their devices can read everything in the space (its history included) and,
    as writer or admin, write. With --with, then, on each of their devices:
    sddsf space join ID --owner YOUR-FINGERPRINT
    """
    if invite == (who is not None):
        raise UsageError("give either --with FINGERPRINT|CODE or --invite")
    if invite:
        _share_by_invite(ctx, name, Role(role), yes, timeout_s)
        return

    async def go(d: Device) -> dict[str, Any]:
        space_id = d.space_by_name(name)
        member = await d.sharing.resolve(who or "")
        report = await d.sharing.share(space_id, member, Role(role))
        return {"space": name, "id": space_id.hex(), "member": member.fingerprint,
                "role": role, "owner": d.sharing.owner_key(space_id).fingerprint,
                "sync": _report_line(report)}

    info = _run(_with_device(ctx, go))
    _emit(info, False, lambda c: _lines(c, [
        f"shared {name!r} with {info['member']} as {info['role']} ({info['sync']})",
        "on each of their devices run:",
        f"  sddsf space join {info['id']} --owner {info['owner']}"]))


def _share_by_invite(ctx: click.Context, name: str, role: Role, yes: bool,
                     timeout_s: float) -> None:
    def show(code: InviteCode) -> None:
        click.echo(f"Invitation code (single use, valid for {timeout_s:.0f} s at most):\n\n"
                   f"    {code.code}\n\nThe person runs:\n    sddsf space join "
                   f"{code.code}\n", err=True)

    def confirm(check: InviteCheck) -> bool:
        click.echo(f"An account asks to join {name!r}:\n\n    fingerprint: "
                   f"{check.fingerprint}\n\nIts screen should show these words:\n\n    "
                   f"{' '.join(check.words)}\n", err=True)
        return True if yes else _ask(f"Share {name!r} with this account as {role.value}?")

    async def go(d: Device) -> dict[str, Any]:
        space_id = d.space_by_name(name)
        guest, report = await invite(d, d.sharing, space_id, role, show=show, confirm=confirm,
                                     timeout_s=timeout_s)
        return {"member": guest.fingerprint, "sync": _report_line(report)}

    info = _run(_with_device(ctx, go))
    say(f"shared {name!r} with {info['member']} as {role.value} ({info['sync']})")


@space.command("join")
@click.argument("space_id", metavar="SPACE_ID|INVITE_CODE")
@click.option("--owner", metavar="FINGERPRINT|CODE",
              help="With a space id: the owner's account fingerprint (compare it with them) "
                   "or account code. Not with an invitation code.")
@click.option("--name", default="", help="What to call the space on this device.")
@click.option("--yes", is_flag=True, help="An invitation: accept the words without asking.")
@click.pass_context
def space_join(ctx: click.Context, space_id: str, owner: str | None, name: str,
               yes: bool) -> None:
    """Join a space another person shared with your account, and sync it: by its id
    and the owner's fingerprint, or by the invitation code their screen shows."""
    if owner is None:
        _join_by_invite(ctx, space_id, name, yes)
        return
    try:
        sid = bytes.fromhex(space_id)
    except ValueError:
        sid = b""
    if len(sid) != 16:
        raise UsageError("SPACE_ID is the 32 hex digits `sddsf space share` printed")

    async def go(d: Device) -> dict[str, Any]:
        key = await d.sharing.resolve(owner)
        await d.sharing.join(sid, key, name)
        return {"id": sid.hex(), "name": d.ident.space_label(sid),
                "members": len(d.sharing.members(sid))}

    info = _run(_with_device(ctx, go))
    say(f"joined space {info['name']} ({info['id']}), {info['members']} member(s)")


def _join_by_invite(ctx: click.Context, code: str, name: str, yes: bool) -> None:
    def confirm(check: InviteCheck) -> bool:
        click.echo(f"This account: {check.fingerprint}\nCheck that the other screen shows "
                   f"these words:\n\n    {' '.join(check.words)}\n", err=True)
        return True if yes else _ask("Do the words match?")

    async def go(d: Device) -> dict[str, Any]:
        sid = await accept_invite(d, d.sharing, code, confirm=confirm, name=name)
        return {"id": sid.hex(), "name": d.ident.space_label(sid),
                "members": len(d.sharing.members(sid))}

    info = _run(_with_device(ctx, go))
    say(f"joined space {info['name']} ({info['id']}), {info['members']} member(s)")


@space.command("members")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def space_members(ctx: click.Context, name: str, as_json: bool) -> None:
    """List the space's members: account, role and devices, as this device verified them."""
    async def go(d: Device) -> list[dict[str, Any]]:
        await d.sync()
        try:  # the relay's trust scores, of this account's own devices only
            trust = {t.device_id: t.score for t in await d.relay.device_trust()}
        except NotFoundError:  # a relay without the controller
            trust = {}
        # Every device listed comes from a registry verified from that account's
        # pinned key ("verified"); "trust" is the relay controller's score.
        return [{"fingerprint": m.fingerprint, "role": m.role, "owner": m.owner, "you": m.you,
                 "devices": [{"id": i.hex(), "name": n, "active": a, "verified": True,
                              "trust": trust.get(i)} for i, n, a in m.devices]}
                for m in d.sharing.members(d.space_by_name(name))]

    rows = _run(_with_device(ctx, go))

    def text(c: Any) -> None:
        if not rows:
            c.line(f"space {name!r} is not shared")
        for r in rows:
            marks = "".join([" (owner)" if r["owner"] else "", " (you)" if r["you"] else ""])
            active = [d["name"] + (f" (trust {d['trust']}/100)" if d["trust"] is not None
                                   else "") for d in r["devices"] if d["active"]]
            c.line(f"{r['fingerprint']}  {r['role']}{marks}  devices, verified from the "
                   f"account key: {', '.join(active)}")

    _emit(rows, as_json, text)


def _member_id(d: Device, space_id: bytes, who: str) -> bytes:
    """A member named by its fingerprint (or the start of one, if unambiguous)."""
    wanted = "".join(who.split()).upper()
    found = [m.account_id for m in d.sharing.members(space_id)
             if m.fingerprint.replace("-", "").startswith(wanted.replace("-", ""))]
    if len(found) != 1:
        raise UsageError(f"{who!r} names {len(found)} members of this space; give more of "
                         "the fingerprint (`sddsf space members` lists them)")
    return found[0]


@space.command("role")
@click.argument("name")
@click.argument("member")
@click.argument("role", type=_ROLES)
@click.pass_context
def space_role(ctx: click.Context, name: str, member: str, role: str) -> None:
    """Give MEMBER (a fingerprint) another ROLE in the space (admins only)."""
    async def go(d: Device) -> str:
        space_id = d.space_by_name(name)
        await d.sync()
        return _report_line(await d.sharing.set_role(space_id, _member_id(d, space_id, member),
                                                     Role(role)))

    say(f"{member} is now {role} in {name!r} ({_run(_with_device(ctx, go))})")


@space.command("remove")
@click.argument("name")
@click.argument("member")
@click.pass_context
def space_remove(ctx: click.Context, name: str, member: str) -> None:
    """Remove MEMBER (a fingerprint) from the space; it moves to a new key that
    the member's devices do not get."""
    async def go(d: Device) -> str:
        space_id = d.space_by_name(name)
        await d.sync()
        return _report_line(await d.sharing.remove(space_id, _member_id(d, space_id, member)))

    say(f"removed {member} from {name!r} ({_run(_with_device(ctx, go))})")


@space.command("leave")
@click.argument("name")
@click.pass_context
def space_leave(ctx: click.Context, name: str) -> None:
    """Leave a space another account shared with you (what you synced stays here)."""
    async def go(d: Device) -> None:
        await d.sharing.leave(d.space_by_name(name))

    _run(_with_device(ctx, go))
    say(f"left {name!r}")


def register(cli: click.Group) -> None:
    """Add the ``account`` group (the ``space`` commands join their group on import)."""
    cli.add_command(account)
