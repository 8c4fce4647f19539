"""``sddsf vault``: secrets synced through the vault space (``docs/vault.md``).

Thin wrappers over :class:`sddsf.client.vault.Vault`. Every command syncs before
it reads and after it writes; with the relay unreachable it warns on stderr and
works on this device's copy (writes are sent at the next sync). Secrets are read
from a file or stdin, never from the command line, and only ``vault get`` prints
one. Records another device tampered with (``Vault.alerts``) are warned about on
stderr until acknowledged with ``vault alerts --ack``. With ``--space SPACE`` a
command works on the vault of that space (one shared with other people);
``vault share NAME --space SPACE`` copies one secret there.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from sddsf.cli.device_cmds import _emit, _run, _with_device, device_name
from sddsf.cli.output import clean
from sddsf.client.device import Device
from sddsf.client.vault import (
    GENERATED,
    KINDS,
    Item,
    Vault,
    VaultAlert,
    Version,
    normalize_secret,
)
from sddsf.errors import NotFoundError, UnavailableError, UsageError

__all__ = ["register"]

T = TypeVar("T")


async def _sync(device: Device, warned: list[bool]) -> None:
    try:
        await device.sync()
    except UnavailableError as exc:
        if not warned:  # once per command, not once per sync
            warned.append(True)
            click.echo(f"warning: not synced ({clean(exc.message)}); using this device's "
                       "copy, changes are sent at the next sync", err=True)


def _space_id(device: Device, space: str) -> bytes:
    """The id of the space named ``space`` (or given by its 32 hex digits)."""
    held = dict(device.spaces())
    named = sorted(s for s, n in held.items() if n == space)
    if named:
        return named[0]
    try:
        sid = bytes.fromhex(space)
    except ValueError:
        sid = b""
    if sid in held:
        return sid
    raise NotFoundError(f"no space named {space!r} on this device; `sddsf space list` shows "
                        "them (a space shared with you: `sddsf space join` it first)")


def _notes(vault: Vault) -> None:
    """Warn about unreadable records and new alerts of ``vault`` (on stderr)."""
    where = _where(None if vault.space is None else vault.label)
    if vault.unreadable:
        click.echo(f"note: {len(vault.unreadable)} vault record(s) could not be read "
                   "(written by a newer sddsf?)", err=True)
    fresh = vault.new_alerts()
    if fresh:
        click.echo(clean(f"warning: {len(fresh)} vault record(s) were changed, removed or "
                         "forged by another device (changes are not used, originals are "
                         f"kept); `sddsf vault alerts{where}` lists them"), err=True)


async def _synced(device: Device, act: Callable[[list[bool]], Awaitable[T]],
                  write: bool) -> T:
    """Sync, act, sync again after a write (one offline warning per command)."""
    warned: list[bool] = []
    await _sync(device, warned)
    result = await act(warned)
    if write:
        await _sync(device, warned)
    return result


def _session(ctx: click.Context, action: Callable[[Vault, Device], T], *,
             write: bool = False, create: bool = False, space: str | None = None) -> T:
    """Sync, open the vault (the personal one, created if absent and ``create``; or
    that of ``space``), act, sync after a write."""
    async def go(device: Device) -> T:
        async def act(_: list[bool]) -> tuple[T, Vault]:
            sid = None if space is None else _space_id(device, space)
            vault = await Vault.open(device, space=sid, create=create)
            return action(vault, device), vault
        result, vault = await _synced(device, act, write)
        _notes(vault)
        return result
    return _run(_with_device(ctx, go))


def _where(space: str | None) -> str:
    """The ``--space`` option to repeat in a suggested command (empty: personal)."""
    return "" if space is None else f" --space {space}"


def _space_option(f: Callable[..., None]) -> Callable[..., None]:
    return click.option("--space", help="Work on the vault of this space (a space shared "
                        "with other people) instead of your own.")(f)


def _read_secret(from_file: str | None) -> str:
    try:
        if from_file is not None:
            text = Path(from_file).read_text(encoding="utf-8")
        elif sys.stdin.isatty():
            text = str(click.prompt("Secret", hide_input=True))
        else:
            text = sys.stdin.read()
    except UnicodeDecodeError:
        raise UsageError(f"{from_file or 'stdin'} is not UTF-8 text") from None
    return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")


def _echo(lines: list[str]) -> Callable[[Any], None]:
    def render(_: Any) -> None:
        for line in lines:
            click.echo(clean(line))  # names come from other devices: inert text
    return render


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _author(device: Device, v: Version, space: bytes | None = None) -> str:
    name = device_name(device, v.author, space)
    return name if v.verified else f"{name} (unverified)"


def _describe(device: Device, item: Item, space: bytes | None = None) -> dict[str, Any]:
    data = item.describe()
    for row, head in zip(data["versions"], item.heads, strict=True):
        row["author_name"] = _author(device, head, space)
    return data


def _version_line(device: Device, v: Version, space: bytes | None = None) -> str:
    extra = " (deletion)" if v.deleted else f" key {v.public_key[:16]}" if v.public_key else ""
    return (f"  {v.id[:12]}  {v.kind:<9}  {_when(v.ts_ms)}  by {_author(device, v, space)}"
            f"{extra}")


@click.group()
def vault() -> None:
    """Secrets (seed phrases, private keys, passwords, notes), end-to-end encrypted."""


@vault.command("put")
@click.argument("name")
@click.option("--kind", required=True, help=f"One of {', '.join(KINDS)} (generic = note).")
@click.option("--from-file", type=click.Path(exists=True, dir_okay=False),
              help="Read the secret from this file (default: stdin, or a hidden prompt).")
@_space_option
@click.pass_context
def put(ctx: click.Context, name: str, kind: str, from_file: str | None,
        space: str | None) -> None:
    """Store the secret NAME (a new version; never taken from the command line)."""
    secret = normalize_secret(kind, _read_secret(from_file))  # fail before any sync
    v = _session(ctx, lambda vt, _: vt.put(name, kind, secret), write=True, create=True,
                 space=space)
    click.echo(f"stored {name!r} ({v.kind}, version {v.id[:12]})")
    if v.public_key:
        click.echo(f"public key: {v.public_key}")


@vault.command("get")
@click.argument("name")
@click.option("--version", help="A version id (or a unique prefix), e.g. during a conflict.")
@_space_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def get(ctx: click.Context, name: str, version: str | None, space: str | None,
        as_json: bool) -> None:
    """Print the secret NAME (the only command that shows a secret)."""
    v = _session(ctx, lambda vt, _: vt.get(name, version), space=space)
    data = {"name": v.name, "secret": v.secret, "public_key": v.public_key, **v.describe()}
    if not v.verified:
        click.echo("note: the author of this version cannot be verified (an unsigned record "
                   "of an older sddsf that this device did not receive in an op)", err=True)
    _emit(data, as_json, lambda _: click.echo(v.secret))


@vault.command("list")
@click.option("--deleted", is_flag=True, help="Include deleted items still restorable.")
@_space_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_(ctx: click.Context, deleted: bool, space: str | None, as_json: bool) -> None:
    """List names, kinds and versions (never the secrets)."""
    def go(vt: Vault, d: Device) -> tuple[list[dict[str, Any]], list[str]]:
        items = vt.list(deleted=deleted)
        lines = []
        for i in items:
            flag = (f"  CONFLICT ({len(i.heads)} versions)" if i.conflict else
                    "  deleted" + ("" if vt.restorable(i) else ", past its grace period")
                    if i.deleted else "")
            lines.append(f"{i.name}  {i.kind}  {_when(i.updated_ms)}{flag}")
        return [_describe(d, i, vt.space) for i in items], lines or ["the vault is empty"]
    rows, lines = _session(ctx, go, space=space)
    _emit(rows, as_json, _echo(lines))


@vault.command("history")
@click.argument("name")
@_space_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def history(ctx: click.Context, name: str, space: str | None, as_json: bool) -> None:
    """Every version of NAME, oldest first (without the secrets)."""
    rows, lines = _session(ctx, lambda vt, d: (
        [{**v.describe(), "author_name": _author(d, v, vt.space)} for v in vt.history(name)],
        [_version_line(d, v, vt.space) for v in vt.history(name)]), space=space)
    _emit(rows, as_json, _echo(lines))


@vault.command("rm")
@click.argument("name")
@_space_option
@click.pass_context
def rm(ctx: click.Context, name: str, space: str | None) -> None:
    """Delete NAME (restorable with `sddsf vault restore` during the grace period)."""
    until = _session(ctx, lambda vt, _: vt.rm(name).ts_ms + vt.grace_ms, write=True,
                     space=space)
    click.echo(clean(f"deleted {name!r}; `sddsf vault restore {name}{_where(space)}` brings "
                     f"it back until {_when(until)}"))


@vault.command("restore")
@click.argument("name")
@_space_option
@click.pass_context
def restore(ctx: click.Context, name: str, space: str | None) -> None:
    """Undo the deletion of NAME (within the grace period)."""
    written = _session(ctx, lambda vt, _: vt.restore(name), write=True, space=space)
    if len(written) == 1:
        click.echo(f"restored {name!r} (version {written[0].id[:12]})")
    else:
        click.echo(clean(f"restored {name!r} as {len(written)} conflicting versions; "
                         f"`sddsf vault conflicts{_where(space)}` shows them"))


@vault.command("generate")
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(GENERATED))
@_space_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def generate(ctx: click.Context, name: str, kind: str, space: str | None,
             as_json: bool) -> None:
    """Generate a key or a 24-word BIP39 phrase; prints only a key's public key."""
    v = _session(ctx, lambda vt, _: vt.generate(name, kind), write=True, create=True,
                 space=space)
    data = {"name": name, "kind": kind, "version": v.id, "public_key": v.public_key}

    def render(_: Any) -> None:
        what = "a 24-word BIP39 phrase" if kind == "bip39" else f"a new {kind} key"
        click.echo(clean(f"generated {what} as {name!r} (version {v.id[:12]}); "
                         f"`sddsf vault get {name}{_where(space)}` shows the secret"))
        if v.public_key:
            click.echo(f"public key: {v.public_key}")
    _emit(data, as_json, render)


@vault.command("conflicts")
@_space_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def conflicts(ctx: click.Context, space: str | None, as_json: bool) -> None:
    """Items with several current versions (without the secrets)."""
    def go(vt: Vault, d: Device) -> tuple[list[dict[str, Any]], list[str]]:
        items = vt.conflicts()
        lines = []
        for i in items:
            lines.append(f"{i.name}: {len(i.heads)} versions (keep one with `sddsf vault "
                         f"resolve {i.name} --keep ID{_where(space)}`)")
            lines += [_version_line(d, h, vt.space) for h in i.heads]
        return [_describe(d, i, vt.space) for i in items], lines or ["no conflicts"]
    rows, lines = _session(ctx, go, space=space)
    _emit(rows, as_json, _echo(lines))


@vault.command("resolve")
@click.argument("name")
@click.option("--keep", required=True, help="The version to keep (an id or unique prefix).")
@_space_option
@click.pass_context
def resolve(ctx: click.Context, name: str, keep: str, space: str | None) -> None:
    """End a conflict on NAME by keeping one version (a deletion confirms the delete)."""
    v = _session(ctx, lambda vt, _: vt.resolve(name, keep), write=True, space=space)
    click.echo(f"resolved {name!r}: " + ("deleted" if v.deleted else
                                         f"kept as version {v.id[:12]}"))


@vault.command("share")
@click.argument("name")
@click.option("--space", required=True,
              help="The space to share it in: yours (shared with the people), or one shared "
              "with you as a writer.")
@click.pass_context
def share(ctx: click.Context, name: str, space: str) -> None:
    """Copy the secret NAME from your vault into the vault of SPACE, where the
    space's members read it (and nothing else of your vault)."""
    async def go(device: Device) -> tuple[Version, int]:
        async def act(_: list[bool]) -> tuple[Version, int]:
            sid = _space_id(device, space)
            personal = await Vault.open(device, create=False)
            shared = await Vault.open(device, space=sid)
            v = personal.share(name, shared)
            _notes(personal)
            _notes(shared)
            return v, sum(not m.you for m in device.sharing.members(sid))
        return await _synced(device, act, write=True)
    v, members = _run(_with_device(ctx, go))
    click.echo(clean(f"shared {name!r} ({v.kind}) in space {space!r} as version {v.id[:12]}"))
    if members:
        click.echo(clean(f"{members} other member account(s) can read it (`sddsf space members "
                         f"{space}`); they read it with `sddsf vault get {name} --space "
                         "SPACE`"))
    else:
        click.echo(clean(f"space {space!r} is not shared with anyone yet: `sddsf space share "
                         f"{space} --with FINGERPRINT`"))


_WHAT = {"changed": "changed in place (the first value is kept)",
         "removed": "removed (kept here)",
         "forged": "forged: its signature does not verify (refused)",
         "misattributed": "written by another device than its author (refused)"}


@vault.command("alerts")
@click.option("--ack", is_flag=True, help="Stop warning about the alerts listed now.")
@_space_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def alerts(ctx: click.Context, ack: bool, space: str | None, as_json: bool) -> None:
    """Vault records another device tampered with (never the secrets)."""
    def go(vt: Vault, d: Device) -> tuple[list[VaultAlert], list[str]]:
        found = vt.new_alerts() if ack else vt.all_alerts()
        if ack:
            vt.acknowledge()
        lines = [f"version {a.version[:12]} of {a.name!r}: {_WHAT.get(a.what, a.what)}, by "
                 + (device_name(d, a.by, vt.space) if a.by else "an unknown device")
                 for a in found]
        if ack:
            lines.append(f"acknowledged {len(found)} alert(s)")
        return found, lines
    found, lines = _session(ctx, go, space=space)
    _emit([a.describe() for a in found], as_json, _echo(lines or ["no alerts"]))


@vault.command("purge")
@_space_option
@click.pass_context
def purge(ctx: click.Context, space: str | None) -> None:
    """Erase the items deleted longer than the grace period ago."""
    names = _session(ctx, lambda vt, _: vt.purge(), write=True, space=space)
    click.echo(clean(f"purged {len(names)} item(s)" + (f": {', '.join(names)}" if names else "")))


def register(cli: click.Group) -> None:
    """Attach the ``vault`` group to the top-level group."""
    cli.add_command(vault)
