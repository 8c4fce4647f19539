"""``sddsf device ...``: pair (add/join), list and revoke devices."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import click
import segno
from mnemonic import Mnemonic

from sddsf.cli import approval_cmds
from sddsf.cli.approval_cmds import pending_line
from sddsf.cli.device_cmds import _emit, _home, _passphrase, _run, _with_device
from sddsf.cli.output import JSON_HELP, Out, iso_time, say
from sddsf.client.device import Device
from sddsf.client.governance import ProposalView
from sddsf.client.pairing import PairingCheck, PairingInvite, add_device, join
from sddsf.errors import NotFoundError, UsageError
from sddsf.protocol.identity import fingerprint
from sddsf.protocol.pairing import (
    CODE_WORDS,
    MAX_CODE_WORDS,
    MIN_CODE_WORDS,
    decode_code,
    parse_uri,
)
from sddsf.protocol.registry import DeviceRecord

__all__ = ["register"]


@contextlib.contextmanager
def _ctrl_c_interrupts() -> Iterator[None]:
    """While a prompt waits inside the event loop, Ctrl-C must stop it at once.

    ``asyncio.run`` turns the first Ctrl-C into a cancellation of its task, which a
    blocking prompt never sees (only the second press would raise). With Python's
    own handler back in place for the prompt, the first press raises
    KeyboardInterrupt there; pairing then burns the code, telling the other side.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _ask(question: str) -> bool:
    with _ctrl_c_interrupts():
        try:
            return click.confirm(question, default=False, err=True)
        except click.Abort:  # Ctrl-C or end of input at the prompt
            raise KeyboardInterrupt from None


def _approver_check(yes: bool) -> Callable[[PairingCheck], bool]:
    def confirm(check: PairingCheck) -> bool:
        click.echo(f"A device asks to join this account:\n\n    name:        {check.name!r}\n"
                   f"    fingerprint: {check.fingerprint}\n\nIt should show the same "
                   f"fingerprint and these words:\n\n    {' '.join(check.words)}\n\n"
                   "Answer yes only if the device in front of you shows exactly these words "
                   "and fingerprint. If another device used the code, answer no.", err=True)
        return True if yes else _ask(f"Add {check.name!r} to this account?")
    return confirm


def _joiner_check(yes: bool) -> Callable[[PairingCheck], bool]:
    def confirm(check: PairingCheck) -> bool:
        click.echo(f"This device: {check.name!r}, fingerprint {check.fingerprint}\n"
                   f"Check that the other device shows this fingerprint and these words:\n\n"
                   f"    {' '.join(check.words)}\n", err=True)
        if yes:
            click.echo("Waiting for the other device to approve...", err=True)
            return True
        return _ask("Do the words match?")
    return confirm


@click.group()
def device() -> None:
    """Pair, list and revoke this account's devices."""


@device.command("add")
@click.option("--code-out", type=click.Path(dir_okay=False),
              help="Also write the pairing code to this file (mode 0600), for scripts.")
@click.option("--code-words", type=click.IntRange(MIN_CODE_WORDS, MAX_CODE_WORDS),
              default=CODE_WORDS, show_default=True,
              help="Words in the pairing code; each adds 11 bits against guessing.")
@click.option("--yes", is_flag=True, help="Accept the words without asking (scripts).")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True,
              help="Seconds to wait for the new device.")
@click.pass_context
def device_add(ctx: click.Context, code_out: str | None, code_words: int, yes: bool,
               timeout_s: float) -> None:
    """Show a one-time pairing code (and QR code), then add the device that joins with it."""
    def show(invite: PairingInvite) -> None:
        if code_out:
            fd = os.open(code_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(invite.code + "\n")
        qr = io.StringIO()
        segno.make(invite.uri, error="m").terminal(out=qr, compact=True)
        click.echo(qr.getvalue(), err=True)
        click.echo(f"Pairing code (single use, valid for {timeout_s:.0f} s at most):\n\n"
                   f"    {invite.code}\n\nOn the new device run:\n    sddsf device join "
                   f"{invite.code} --relay {invite.relay_url} --name NAME\nor scan the QR "
                   f"code, which holds:\n    {invite.uri}\n", err=True)

    async def go(d: Device) -> dict[str, Any]:
        await d.sync()  # push this device's pending edits first: the new one gets them at once
        new_id, change = await add_device(d, show=show, confirm_sas=_approver_check(yes),
                                          timeout_s=timeout_s, code_words=code_words)
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


def _join_target(code: str, relay_url: str | None) -> tuple[str, str]:
    """``(relay_url, code)`` from a code and ``--relay``, or from a pairing link."""
    link = parse_uri(code)
    if link is not None:
        if relay_url is not None and relay_url.rstrip("/") != link[0].rstrip("/"):
            raise UsageError(f"the pairing link names the relay {link[0]}, not {relay_url}; "
                             "leave out --relay")
        return link
    if relay_url is None:
        raise UsageError("give --relay URL (the relay the other device uses), or pass the "
                         "sddsf://pair link its QR code holds")
    return relay_url, code


@device.command("join")
@click.argument("code")
@click.option("--relay", "relay_url", help="The relay the other device uses (not needed "
              "with an sddsf://pair link).")
@click.option("--name", required=True, help="This device's name.")
@click.option("--yes", is_flag=True, help="Accept the words without asking (scripts).")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True,
              help="Seconds to wait for the other device.")
@click.option("--insecure-plaintext-key", is_flag=True,
              help="INSECURE: keep the store key in plaintext (no keyring, no passphrase).")
@click.pass_context
def device_join(ctx: click.Context, code: str, relay_url: str | None, name: str, yes: bool,
                timeout_s: float, insecure_plaintext_key: bool) -> None:
    """Join an account with the pairing code (or the sddsf://pair link of the QR code)
    another device shows."""
    relay_url, code = _join_target(code, relay_url)
    decode_code(code, Mnemonic("english").wordlist)  # a typo is caught before anything else
    if (_home(ctx) / "storage-key.json").exists():
        raise UsageError(f"{_home(ctx)} already holds a device; use another --home")
    # Asked before pairing starts: a Ctrl-C here leaves nothing anywhere.
    secret = None if insecure_plaintext_key else _passphrase(confirm=True)()

    async def go() -> tuple[str, int, ProposalView | None]:
        d = await join(_home(ctx), relay_url, code, name,
                       passphrase=None if secret is None else (lambda: secret),
                       confirm_sas=_joiner_check(yes), insecure_plaintext=insecure_plaintext_key,
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
            trust = {t.device_id.hex(): t for t in await d.relay.device_trust()}
        except NotFoundError:  # a relay without the controller
            trust = {}
        for row in rows:
            # JSON-ready values, in the shape of the relay's answer (--json shows them).
            t = trust.get(row["id"])
            row.update(trust=t.score if t else None, access=t.access if t else None,
                       quarantined=t.quarantined if t else False,
                       trust_factors=[dataclasses.asdict(f) for f in t.factors] if t else [])
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

