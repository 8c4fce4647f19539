"""Device commands: ``init``, ``space``, ``put``/``get``/``ls``, ``sync``, ``status``, ``recover``.

Thin wrappers over :class:`sddsf.client.device.Device`; no protocol logic here.
Every read command takes ``--json``. Failures end with exit code 1 and one line
that says what to do (see :func:`sddsf.cli.main`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
import pycrdt
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from sddsf.client.device import Device, Progress
from sddsf.client.home import default_home
from sddsf.errors import UnavailableError, UsageError
from sddsf.recovery import phrase_from_secret

__all__ = ["register"]

T = TypeVar("T")
KV_DOC = "kv"  # the key-value document of every space (a pycrdt Map named "kv")


def _passphrase(confirm: bool = False) -> Callable[[], str]:
    def ask() -> str:
        env = os.environ.get("SDDSF_PASSPHRASE")
        if env is not None:
            return env
        return str(click.prompt("Passphrase for this device's store", hide_input=True,
                                confirmation_prompt=confirm))
    return ask


def _home(ctx: click.Context) -> Path:
    home = ctx.obj.get("home") if ctx.obj else None
    return Path(home) if home else default_home()


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _with_device(ctx: click.Context, action: Callable[[Device], Awaitable[T]]) -> T:
    device = Device.open(_home(ctx), passphrase=_passphrase())
    try:
        return await action(device)
    finally:
        await device.close()


def _kv(device: Device, space: str) -> Any:
    return device.doc(device.space_by_name(space), KV_DOC).get("kv", type=pycrdt.Map)


def _emit(data: Any, as_json: bool, render: Callable[[Console], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        render(Console(highlight=False))


def _lines(console: Console, lines: list[str]) -> None:
    for line in lines:
        console.print(line)


@click.command()
@click.option("--relay", "relay_url", required=True, help="Relay URL, e.g. http://127.0.0.1:8787")
@click.option("--name", default="this device", show_default=True, help="Device name.")
@click.option("--phrase-out", type=click.Path(dir_okay=False),
              help="Write the recovery phrase to this file (mode 0600) instead of showing it.")
@click.option("--insecure-plaintext-key", is_flag=True,
              help="INSECURE: keep the store key in plaintext (no keyring, no passphrase).")
@click.pass_context
def init(ctx: click.Context, relay_url: str, name: str, phrase_out: str | None,
         insecure_plaintext_key: bool) -> None:
    """Create an account and this device; shows the recovery phrase ONCE."""
    async def go() -> tuple[bytes, str]:
        device, secret = await Device.create_account(
            _home(ctx), relay_url, name, passphrase=None if insecure_plaintext_key
            else _passphrase(confirm=True), insecure_plaintext=insecure_plaintext_key)
        await device.close()
        return secret, device.account.fingerprint

    secret, fingerprint = _run(go())
    words = phrase_from_secret(secret)
    if phrase_out:
        fd = os.open(phrase_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(words + "\n")
        click.echo(f"Recovery phrase written to {phrase_out} (keep it offline).")
    else:
        click.echo("Recovery phrase (write it down now; it is shown only once):\n")
        click.echo("  " + words + "\n")
    click.echo(f"Account fingerprint: {fingerprint}")
    click.echo(f"Device home: {_home(ctx)}")


@click.command()
@click.option("--relay", "relay_url", required=True)
@click.option("--phrase-file", type=click.Path(dir_okay=False),
              help="File holding the 24-word recovery phrase.")
@click.option("--shares", "share_files", multiple=True, type=click.Path(dir_okay=False),
              help="A file holding one SLIP-39 share (repeat: --shares F1 --shares F2).")
@click.option("--share-passphrase", is_flag=True,
              help="The shares were made with `recovery split --passphrase` (prompted, or "
                   "SDDSF_SHARES_PASSPHRASE).")
@click.option("--passphrase", "use_backup", is_flag=True,
              help="Recover from the relay's passphrase backup (needs --account).")
@click.option("--account", "account_text",
              help="Account id (64 hex digits, printed by `sddsf backup enable`).")
@click.option("--name", default="recovered device", show_default=True)
@click.option("--revoke-others", is_flag=True, help="Revoke every other device.")
@click.option("--insecure-plaintext-key", is_flag=True,
              help="INSECURE: keep the store key in plaintext (no keyring, no passphrase).")
@click.pass_context
def recover(ctx: click.Context, relay_url: str, phrase_file: str | None,
            share_files: tuple[str, ...], share_passphrase: bool, use_backup: bool,
            account_text: str | None, name: str, revoke_others: bool,
            insecure_plaintext_key: bool) -> None:
    """Recover the account on this device: from the recovery phrase, from SLIP-39
    shares, or from the relay's passphrase backup."""
    from sddsf import recovery  # noqa: PLC0415 - keep CLI start-up light

    sources = [bool(phrase_file), bool(share_files), use_backup]
    if sum(sources) != 1:
        raise UsageError("give exactly one of --phrase-file F, --shares F1 --shares F2 ..., "
                         "or --passphrase --account ID")
    if phrase_file:
        secret = recovery.secret_from_phrase(recovery.read_words_file(phrase_file))
    elif share_files:
        words = [recovery.read_words_file(f, kind="share") for f in share_files]
        secret = recovery.combine_shares(words, _env_or_prompt(
            "SDDSF_SHARES_PASSPHRASE", "Passphrase of the shares") if share_passphrase else "")
    else:
        if not account_text:
            raise UsageError("--passphrase needs --account ID (printed by `sddsf backup "
                             "enable`)")
        account_id = recovery.parse_account_id(account_text)
        backup_pass = _env_or_prompt("SDDSF_BACKUP_PASSPHRASE", "Backup passphrase")
        secret = _run(recovery.fetch_backup_secret(relay_url, account_id, backup_pass))

    async def go() -> tuple[str, int]:
        device = await Device.recover(
            _home(ctx), relay_url, secret, name,
            passphrase=None if insecure_plaintext_key else _passphrase(confirm=True),
            revoke_others=revoke_others, insecure_plaintext=insecure_plaintext_key)
        result = device.account.fingerprint, len(device.spaces())
        _print_alerts(device.alerts)
        await device.close()
        return result

    fingerprint, spaces = _run(go())
    click.echo(f"Recovered account {fingerprint}; {spaces} space(s) readable.")


def _print_alerts(alerts: list[tuple[str, str]]) -> None:
    """One stderr line per alert: another device wrote something the log contradicts."""
    for code, message in alerts:
        click.echo(f"alert [{code}]: {message}", err=True)


def _env_or_prompt(env: str, what: str) -> str:
    value = os.environ.get(env)
    if value is not None:
        return value
    return str(click.prompt(what, hide_input=True))


@click.group()
def space() -> None:
    """Create and list spaces."""


@space.command("create")
@click.argument("name")
@click.pass_context
def space_create(ctx: click.Context, name: str) -> None:
    """Create a space (a set of documents sharing keys)."""
    space_id = _run(_with_device(ctx, lambda d: d.create_space(name)))
    click.echo(f"created space {name!r} ({space_id.hex()[:12]})")


@space.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def space_list(ctx: click.Context, as_json: bool) -> None:
    """List spaces this device can read."""
    async def go(d: Device) -> list[dict[str, str]]:
        return [{"name": n, "id": s.hex()} for s, n in d.spaces()]
    rows = _run(_with_device(ctx, go))
    _emit(rows, as_json, lambda c: _lines(
        c, [f"{r['name'] or '(unnamed)'}  {r['id'][:12]}" for r in rows]))


@space.command("policy")
@click.argument("name")
@click.option("--reencrypt", type=click.Choice(["lazy", "eager"]),
              help="After a revocation: re-encrypt snapshots at the next compaction (lazy, "
                   "the default) or at once (eager).")
@click.pass_context
def space_policy(ctx: click.Context, name: str, reencrypt: str | None) -> None:
    """Show or set a space's re-encryption policy (synced to every device)."""
    async def go(d: Device) -> str:
        space_id = d.space_by_name(name)
        if reencrypt is not None:
            d.set_space_policy(space_id, reencrypt)
            await d.sync()
        return d.space_policy(space_id)
    click.echo(f"space {name!r}: reencrypt = {_run(_with_device(ctx, go))}")


@click.command()
@click.argument("space_name")
@click.argument("key")
@click.argument("value")
@click.pass_context
def put(ctx: click.Context, space_name: str, key: str, value: str) -> None:
    """Set KEY to VALUE in the space's key-value document (synced on `sddsf sync`)."""
    async def go(d: Device) -> None:
        _kv(d, space_name)[key] = value
        d.flush()
    _run(_with_device(ctx, go))
    click.echo(f"{space_name}: {key} set (run `sddsf sync` to share it)")


@click.command()
@click.argument("space_name")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def get(ctx: click.Context, space_name: str, key: str, as_json: bool) -> None:
    """Print the value of KEY."""
    async def go(d: Device) -> Any:
        kv = _kv(d, space_name)
        if key not in kv:
            raise UsageError(f"no key {key!r} in {space_name!r}; `sddsf ls {space_name}` "
                             "lists them")
        return kv[key]
    value = _run(_with_device(ctx, go))
    _emit({"key": key, "value": value}, as_json, lambda c: click.echo(str(value)))


@click.command("ls")
@click.argument("space_name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def ls(ctx: click.Context, space_name: str, as_json: bool) -> None:
    """List the keys and values of the space's key-value document."""
    async def go(d: Device) -> dict[str, Any]:
        return dict(_kv(d, space_name))
    items = _run(_with_device(ctx, go))
    _emit(items, as_json, lambda c: _lines(c, [f"{k} = {v}" for k, v in sorted(items.items())]))


#: A pull shows a progress bar only when it has more than this many entries to go.
_PROGRESS_MIN = 1000


@contextlib.contextmanager
def _pull_progress(*, enabled: bool) -> Iterator[Progress | None]:
    """A rich progress bar (on stderr, only on a terminal) for long pulls."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield None
        return
    with RichProgress(TextColumn("pulling {task.description}"), BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                      transient=True) as bar:
        tasks: dict[bytes, TaskID] = {}

        def update(space_id: bytes, done: int, total: int) -> None:
            if space_id not in tasks:
                if total - done < _PROGRESS_MIN:
                    return
                tasks[space_id] = bar.add_task(space_id.hex()[:8], total=total)
            bar.update(tasks[space_id], completed=done, total=total)

        yield update


@click.command()
@click.option("--watch", is_flag=True, help="Keep syncing (backoff with jitter on errors).")
@click.option("--interval", default=5.0, show_default=True, help="Seconds between syncs.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def sync(ctx: click.Context, watch: bool, interval: float, as_json: bool) -> None:
    """Push pending edits, pull and verify everything, apply."""
    async def once(d: Device) -> dict[str, Any]:
        with _pull_progress(enabled=not as_json and not watch) as progress:
            r = await d.sync(progress)
        _print_alerts(r.alerts)
        result = {"pushed": r.pushed, "pulled": r.pulled, "applied": r.applied,
                  "rejected": r.rejected, "snapshots_loaded": r.snapshots_loaded}
        if r.alerts:  # what this device found wrong with another device
            result["alerts"] = [list(a) for a in r.alerts]
        return result

    async def loop(d: Device) -> None:
        delay = interval
        while True:
            try:
                result = await once(d)
                click.echo(json.dumps(result) if as_json else
                           f"synced: pushed {result['pushed']}, pulled {result['pulled']}")
                delay = interval
            except UnavailableError as exc:
                delay = min(delay * 2, 300.0)
                click.echo(f"relay unavailable ({exc.message}); retrying in {delay:.0f} s",
                           err=True)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter

    if watch:
        _run(_with_device(ctx, loop))
        return
    result = _run(_with_device(ctx, once))
    _emit(result, as_json, lambda c: c.print(
        f"synced: pushed {result['pushed']}, pulled {result['pulled']}, applied "
        f"{result['applied']}"))
    codes = [code for code, _ in result["rejected"]]
    if "chain_fork" in codes:
        click.echo("note: this device's chain had diverged (restored from an older copy?); "
                   "its edits were sealed again and sent", err=True)
    lost = [c for c in codes if c != "chain_fork"]
    if lost:
        raise UsageError(f"the relay refused {len(lost)} op(s) ({', '.join(sorted(set(lost)))})"
                         "; they are kept in this device's store under 'failed'")


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Pending ops, verified tree heads, devices."""
    async def go(d: Device) -> dict[str, Any]:
        state = d.registry()
        heads = {}
        for s, n in d.spaces():
            heads[n or s.hex()[:12]] = {"verified_log_size": d.verified_size(s)}
        return {
            "device": d.name, "device_id": d.device_id.hex(),
            "account_fingerprint": d.account.fingerprint, "relay": d.relay_url,
            "store_key": d.key_kind, "pending_ops": d.pending_count(), "spaces": heads,
            "devices": [{"name": r.name, "status": r.status.value,
                         "id": r.device_id.hex()[:12]} for r in state.devices.values()],
            "checked_at_ms": int(time.time() * 1000)}
    info = _run(_with_device(ctx, go))

    def render(c: Console) -> None:
        c.print(f"[bold]{info['device']}[/] on {info['relay']} "
                f"(account {info['account_fingerprint']})")
        if info["store_key"] == "plaintext":
            c.print("[red]WARNING: this device's store key is kept in plaintext[/]")
        c.print(f"pending ops: {info['pending_ops']}")
        for name, h in info["spaces"].items():
            c.print(f"space {name}: verified log size {h['verified_log_size']}")
        for dev in info["devices"]:
            c.print(f"device {dev['name']} ({dev['id']}): {dev['status']}")
    _emit(info, as_json, render)


def register(cli: click.Group) -> None:
    """Attach the device commands to the top-level group."""
    cli.add_command(init)
    cli.add_command(recover)
    cli.add_command(space)
    cli.add_command(put)
    cli.add_command(get)
    cli.add_command(ls)
    cli.add_command(sync)
    cli.add_command(status)
