"""Device commands: ``init``, ``space``, ``put``/``get``/``ls``/``rm``, ``sync``, ``status``,
``recover``.

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
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from sddsf.client.device import Device, LockMode, Progress
from sddsf.client.home import default_home
from sddsf.client.kv import KeyValue, KvEntry, KvVersion
from sddsf.client.retry import RetryPolicy
from sddsf.errors import RateLimitedError, UnavailableError, UsageError
from sddsf.recovery import phrase_from_secret

__all__ = ["register"]

T = TypeVar("T")


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


async def _with_device(ctx: click.Context, action: Callable[[Device], Awaitable[T]], *,
                       lock: LockMode = "session") -> T:
    # One process at a time changes a home: a command holds its lock from open to
    # close (a watcher only while it syncs), others wait and say so on stderr.
    device = Device.open(_home(ctx), passphrase=_passphrase(), lock=lock,
                         lock_timeout_s=float(os.environ.get("SDDSF_LOCK_TIMEOUT", "120")),
                         on_lock_wait=lambda message: click.echo(message, err=True))
    try:
        return await action(device)
    finally:
        await device.close()


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
        await device.close()
        return result

    fingerprint, spaces = _run(go())
    click.echo(f"Recovered account {fingerprint}; {spaces} space(s) readable.")


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


# ------------------------------------------------------------------ key-value
def _kv(device: Device, space: str) -> KeyValue:
    return KeyValue(device, device.space_by_name(space))


def _read_value(value: str | None, from_file: str | None) -> str:
    """VALUE, or the value from --from-file F or stdin (VALUE ``-``; a hidden prompt
    on a terminal). One trailing newline of a file or stdin is dropped."""
    if value is not None and from_file is not None:
        raise UsageError("give VALUE (or `-` for stdin) or --from-file F, not both")
    if value is None and from_file is None:
        raise UsageError("give the value: `-` reads it from stdin, --from-file F from a file "
                         "(a VALUE typed on the command line is visible in the process list)")
    if value is not None and value != "-":
        return value
    try:
        if from_file is not None:
            text = Path(from_file).read_text(encoding="utf-8")
        elif sys.stdin.isatty():
            text = str(click.prompt("Value", hide_input=True))
        else:
            text = sys.stdin.read()
    except UnicodeDecodeError:
        raise UsageError(f"{from_file or 'stdin'} is not UTF-8 text") from None
    return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")


def _author_name(device: Device, v: KvVersion) -> str:
    if v.author is None:
        return "an older sddsf"
    rec = device.registry().device(bytes.fromhex(v.author))
    return rec.name if rec is not None else v.author[:12]


def _conflict_rows(device: Device, e: KvEntry) -> list[dict[str, Any]]:
    return [{"version": h.id, "value": h.value, "author": h.author,
             "author_name": _author_name(device, h), "ts_ms": h.ts_ms,
             "author_verified": h.verified} for h in e.heads]


def _kv_notes(kv: KeyValue) -> None:
    for a in kv.alerts:
        by = f"device {a.by[:12]}" if a.by else "an unknown device"
        click.echo(f"warning: a record of key {a.key!r} was {a.what} by {by}; it is not "
                   "used", err=True)


@click.command()
@click.argument("space_name")
@click.argument("key")
@click.argument("value", required=False)
@click.option("--from-file", type=click.Path(exists=True, dir_okay=False),
              help="Read the value from this file (one trailing newline is dropped).")
@click.pass_context
def put(ctx: click.Context, space_name: str, key: str, value: str | None,
        from_file: str | None) -> None:
    """Set KEY in the space's key-value document (synced on `sddsf sync`).

    The value is VALUE, or `-` to read it from stdin (a hidden prompt on a
    terminal), or --from-file F. Pass secrets with `-` or --from-file: a VALUE
    typed on the command line is visible to other users in the process list and
    stays in shell history. A put replaces every current value of KEY, including
    concurrent values written on other devices (a conflict `sddsf ls` marks).
    """
    text = _read_value(value, from_file)

    async def go(d: Device) -> int:
        kv = _kv(d, space_name)
        before = kv.entry(key)
        kv.put(key, text)
        _kv_notes(kv)
        return len(before.heads) if before is not None and before.conflict else 0
    replaced = _run(_with_device(ctx, go))
    click.echo(f"{space_name}: {key} set (run `sddsf sync` to share it)")
    if replaced:
        click.echo(f"note: this value replaces {replaced} concurrent values of {key!r}",
                   err=True)


@click.command()
@click.argument("space_name")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def get(ctx: click.Context, space_name: str, key: str, as_json: bool) -> None:
    """Print the value of KEY (every value, with its device, during a conflict)."""
    async def go(d: Device) -> tuple[KvEntry, list[dict[str, Any]]]:
        kv = _kv(d, space_name)
        e = kv.entry(key)
        _kv_notes(kv)
        if e is None:
            raise UsageError(f"no key {key!r} in {space_name!r}; `sddsf ls {space_name}` "
                             "lists them")
        return e, _conflict_rows(d, e) if e.conflict else []
    e, rows = _run(_with_device(ctx, go))
    if not e.conflict:
        _emit({"key": key, "value": e.value}, as_json, lambda c: click.echo(str(e.value)))
        return
    click.echo(f"note: key {key!r} has {len(rows)} concurrent values (written on devices "
               f"that had not seen each other's); `sddsf put {space_name} {key} -` with the "
               "one to keep ends the conflict", err=True)

    def render(_: Console) -> None:
        for r in rows:
            click.echo(f"{r['author_name']}: " + ("(removed)" if r["value"] is None
                                                   else str(r["value"])))
    _emit({"key": key, "value": e.value, "conflict": True, "values": rows}, as_json, render)


@click.command("ls")
@click.argument("space_name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def ls(ctx: click.Context, space_name: str, as_json: bool) -> None:
    """List the keys and values of the space's key-value document (a key with
    concurrent values is marked CONFLICT; in JSON its value is the list of them)."""
    async def go(d: Device) -> tuple[dict[str, Any], list[str]]:
        kv = _kv(d, space_name)
        data: dict[str, Any] = {}
        lines: list[str] = []
        for e in kv.entries():
            if not e.conflict:
                data[e.key] = e.value
                lines.append(f"{e.key} = {e.value}")
                continue
            data[e.key] = [h.value for h in e.heads if not h.deleted]
            names = ", ".join(_author_name(d, h) for h in e.heads)
            lines.append(f"{e.key}: CONFLICT, {len(e.heads)} concurrent values ({names}); "
                         f"`sddsf get {space_name} {e.key}` shows them")
        _kv_notes(kv)
        return data, lines
    items, lines = _run(_with_device(ctx, go))

    def render(_: Console) -> None:
        for line in lines:  # plain echo: a value is text, never console markup
            click.echo(line)
    _emit(items, as_json, render)


@click.command("rm")
@click.argument("space_name")
@click.argument("key")
@click.pass_context
def rm(ctx: click.Context, space_name: str, key: str) -> None:
    """Remove KEY from the space's key-value document (synced on `sddsf sync`)."""
    async def go(d: Device) -> None:
        _kv(d, space_name).rm(key, space_name)
    _run(_with_device(ctx, go))
    click.echo(f"{space_name}: {key} removed (run `sddsf sync` to share it)")


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
        return {"pushed": r.pushed, "pulled": r.pulled, "applied": r.applied,
                "rejected": r.rejected, "snapshots_loaded": r.snapshots_loaded,
                "skipped": [{"offset": k.offset, "author": k.author.hex(), "seq": k.seq,
                             "code": k.code, "message": k.message} for k in r.skipped]}

    async def loop(d: Device) -> None:
        delay = interval
        retry = RetryPolicy(base_s=interval, max_s=300.0)  # the runner's rules (429, 503)
        tries = 0
        while True:
            try:
                result = await once(d)
                click.echo(json.dumps(result) if as_json else
                           f"synced: pushed {result['pushed']}, pulled {result['pulled']}")
                delay, tries = interval * random.uniform(0.8, 1.2), 0  # noqa: S311 - jitter
            except (UnavailableError, RateLimitedError) as exc:
                tries += 1
                delay = retry.wait_for(exc, tries) or interval
                click.echo(f"relay unavailable ({exc.message}); retrying in {delay:.0f} s",
                           err=True)
            await asyncio.sleep(delay)

    if watch:  # takes the home's lock for each sync only, so other commands get turns
        _run(_with_device(ctx, loop, lock="operation"))
        return
    result = _run(_with_device(ctx, once))
    _emit(result, as_json, lambda c: c.print(
        f"synced: pushed {result['pushed']}, pulled {result['pulled']}, applied "
        f"{result['applied']}"))
    if result["skipped"]:
        click.echo(f"warning: the relay's log holds {len(result['skipped'])} op(s) of a revoked "
                   "device written after its revocation; they were not applied (the relay "
                   "should have refused them: tell its operator to run `sddsf relay fsck`)",
                   err=True)
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
    cli.add_command(rm)
    cli.add_command(sync)
    cli.add_command(status)
