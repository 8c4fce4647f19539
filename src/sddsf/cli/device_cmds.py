"""Device commands: ``init``, ``space``, ``put``/``get``/``ls``/``rm``, ``sync``, ``status``,
``recover``.

Thin wrappers over :class:`sddsf.client.device.Device`; no protocol logic here.
Every read command takes ``--json``. Failures end with exit code 1 and one line
that says what to do (see :func:`sddsf.cli.main`).

Size: the device command group (init, spaces, put/get/ls/rm, sync, status,
recover) shares the CLI plumbing for opening a device, progress output and
error hints; each command stays a thin wrapper.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from sddsf.cli.output import JSON_HELP, Out, emit, iso_time, say
from sddsf.cli.params import NAME, check_text
from sddsf.cli.peer_cmds import PeerOptions, peer_options, resolve, start_peers
from sddsf.cli.peer_cmds import peers as peers_command
from sddsf.client.authors import author_device
from sddsf.client.device import Device, LockMode, Progress, SyncReport
from sddsf.client.home import default_home, staged_home
from sddsf.client.kv import KeyValue, KvEntry, KvVersion
from sddsf.client.relay_client import RelayClient
from sddsf.errors import (
    AuthorizationError,
    Code,
    ConfigError,
    ProofError,
    SddsfError,
    UnavailableError,
    UsageError,
)
from sddsf.protocol.identity import fingerprint, fingerprint_bytes
from sddsf.recovery import phrase_from_secret

__all__ = ["register"]

T = TypeVar("T")


def _passphrase(confirm: bool = False) -> Callable[[], str]:
    """The store passphrase: ``SDDSF_PASSPHRASE``, else a prompt on a terminal.

    Without a terminal there is nobody to ask: the command fails with what to
    do instead of a prompt that cannot be answered.
    """
    def ask() -> str:
        env = os.environ.get("SDDSF_PASSPHRASE")
        if env is not None:
            return check_text(env, "SDDSF_PASSPHRASE")
        if not sys.stdin.isatty():
            if confirm:
                raise ConfigError("no terminal to ask for the new store passphrase: set "
                                  "SDDSF_PASSPHRASE, or run the command in a terminal")
            raise ConfigError("this device's store is locked and there is no terminal to "
                              "ask for its passphrase: run `sddsf unlock` in a terminal "
                              "first, or set SDDSF_PASSPHRASE")
        return check_text(str(click.prompt("Passphrase for this device's store",
                                           hide_input=True, confirmation_prompt=confirm)),
                          "the passphrase")
    return ask


def _home(ctx: click.Context) -> Path:
    home = ctx.obj.get("home") if ctx.obj else None
    return Path(home) if home else default_home()


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


#: Where the CLI records the time of this device's last successful sync.
_LAST_SYNC = ("cli", b"last_sync")


class CliDevice(Device):
    """The device as the CLI uses it: every successful sync (by any command, or by
    the runner of ``sync --watch``) records its time for ``sddsf status``."""

    async def sync(self, progress: Progress | None = None) -> SyncReport:
        """:meth:`Device.sync`, then record when it succeeded."""
        report = await super().sync(progress)
        self.store.put(*_LAST_SYNC, str(self._clock()).encode())
        return report

    def last_sync_ms(self) -> int | None:
        """When this device last synced successfully (None: never, as far as the CLI knows)."""
        raw = self.store.get(*_LAST_SYNC)
        return int(raw.decode()) if raw else None


async def _with_device(ctx: click.Context, action: Callable[[CliDevice], Awaitable[T]], *,
                       lock: LockMode = "session") -> T:
    # One process at a time changes a home: a command holds its lock from open to
    # close (a watcher only while it syncs), others wait and say so on stderr.
    # Device.open builds ``cls(...)``, so this is a CliDevice (its annotation says Device).
    device = cast(CliDevice, CliDevice.open(
        _home(ctx), passphrase=_passphrase(), lock=lock,
        lock_timeout_s=float(os.environ.get("SDDSF_LOCK_TIMEOUT", "120")),
        on_lock_wait=lambda message: say(message, err=True)))
    try:
        return await action(device)
    finally:
        await device.close()


_emit = emit  # the name the other command modules import


def _lines(out: Out, lines: list[str]) -> None:
    for line in lines:
        out.line(line)


class _PhraseOut:
    """Where ``init`` delivers the recovery phrase: a file reserved (created empty,
    0600, never over an existing file) before the account exists, or stdout.

    Invariant: an account created on the relay always gets its phrase delivered
    (if writing the file fails, the phrase is shown instead).
    """

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self._fd: int | None = None
        self.delivered = False

    def reserve(self) -> None:
        """Create the file now, or fail before anything else is made.

        Raises:
            UsageError: the path exists, is a directory, or cannot be created.
        """
        path = self.path
        if path is None:
            return
        if path.is_dir():
            raise UsageError(f"--phrase-out {path} is a directory; give the path of a new file")
        if path.exists() or path.is_symlink():
            raise UsageError(f"--phrase-out {path} already exists; give the path of a new "
                             "file (the phrase is never written over a file)")
        if not path.parent.is_dir():
            raise UsageError(f"--phrase-out {path}: the directory {path.parent} does not exist")
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                               0o600)
        except OSError as exc:
            raise UsageError(f"cannot create --phrase-out {path}: {exc.strerror}") from None

    def deliver(self, words: str) -> None:
        """Write the phrase to the reserved file, or show it (also if writing fails)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                data = (words + "\n").encode()
                while data:
                    data = data[os.write(fd, data):]
                os.fsync(fd)
                self.delivered = True
                say(f"Recovery phrase written to {self.path} (mode 0600; keep it offline).")
                return
            except OSError as exc:
                say(f"warning: could not write the phrase to {self.path} ({exc.strerror}); "
                    "here it is instead", err=True)
            finally:
                os.close(fd)
        click.echo("Recovery phrase (write it down now; it is shown only once):\n")
        click.echo("  " + words + "\n")
        self.delivered = True

    def discard(self) -> None:
        """Remove the reserved file if the phrase was never written to it."""
        if self._fd is not None and self.path is not None:
            os.close(self._fd)
            self._fd = None
            with contextlib.suppress(OSError):
                self.path.unlink()


def _nothing_created(exc: UnavailableError) -> UnavailableError:
    return UnavailableError(f"{exc.message}; nothing was created (check the --relay URL and "
                            "run the command again)")


@click.command()
@click.option("--relay", "relay_url", required=True, help="Relay URL, e.g. http://127.0.0.1:8787")
@click.option("--name", type=NAME, default="this device", show_default=True,
              help="Device name.")
@click.option("--phrase-out", type=click.Path(),
              help="Write the recovery phrase to this new file (mode 0600) instead of "
                   "showing it.")
@click.option("--insecure-plaintext-key", is_flag=True,
              help="INSECURE: keep the store key in plaintext (no keyring, no passphrase).")
@click.pass_context
def init(ctx: click.Context, relay_url: str, name: str, phrase_out: str | None,
         insecure_plaintext_key: bool) -> None:
    """Create an account and this device; shows the recovery phrase ONCE.

    Atomic: if anything fails (the relay cannot be reached, say), no device home
    and no phrase file are left behind, and the command can simply be run again.
    """
    home = _home(ctx)
    phrase = _PhraseOut(phrase_out)
    phrase.reserve()  # before anything exists: a phrase that cannot be delivered stops here

    async def go(stage: Path) -> tuple[bytes, str]:
        device, secret = await CliDevice.create_account(
            stage, relay_url, name, passphrase=None if insecure_plaintext_key
            else _passphrase(confirm=True), insecure_plaintext=insecure_plaintext_key)
        await device.close()
        return secret, device.account.fingerprint

    try:
        with staged_home(home) as stage:
            try:
                secret, fingerprint = _run(go(stage))
            except UnavailableError as exc:
                raise _nothing_created(exc) from None
            # The account exists now: deliver its phrase before anything else.
            phrase.deliver(phrase_from_secret(secret))
    finally:
        phrase.discard()
    say(f"Account fingerprint: {fingerprint}")
    say(f"Device home: {home}")


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
              help="The account: its fingerprint (XXXX-XXXX-..., shown by init, status and "
                   "backup enable) or its id (64 hex digits).")
@click.option("--name", type=NAME, default="recovered device", show_default=True,
              help="This device's name.")
@click.option("--revoke-others", is_flag=True,
              help="Revoke every other device of the account (a lost or stolen device "
                   "can then no longer sync, and every space moves to a new key).")
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
        account_id = _run(_account_id_from(relay_url, account_text))
        backup_pass = _env_or_prompt("SDDSF_BACKUP_PASSPHRASE", "Backup passphrase")
        secret = _run(recovery.fetch_backup_secret(relay_url, account_id, backup_pass))

    async def go(stage: Path) -> tuple[str, int]:
        device = await CliDevice.recover(
            stage, relay_url, secret, name,
            passphrase=None if insecure_plaintext_key else _passphrase(confirm=True),
            revoke_others=revoke_others, insecure_plaintext=insecure_plaintext_key)
        result = device.account.fingerprint, len(device.spaces())
        _print_alerts(device.alerts)
        await device.close()
        return result

    with staged_home(_home(ctx)) as stage:  # a failed recovery leaves no half-made home
        fingerprint, spaces = _run(go(stage))
    say(f"Recovered account {fingerprint}; {spaces} space(s) readable.")


async def _account_id_from(relay_url: str, text: str) -> bytes:
    """The account id named by ``text``: an id, or a fingerprint the relay resolves
    (the answer is checked against the fingerprint; the backup itself is checked
    against the account after decryption).

    Raises:
        UsageError: neither an id nor a fingerprint.
        ProofError: the relay answered with an account of another fingerprint.
    """
    from sddsf import recovery  # noqa: PLC0415

    prefix = fingerprint_bytes(text)
    if prefix is None:
        try:
            return recovery.parse_account_id(text)
        except UsageError:
            raise UsageError("--account takes the account fingerprint (XXXX-XXXX-... as "
                             "`sddsf status` shows it) or the account id (64 hex digits)"
                             ) from None
    async with RelayClient(relay_url) as relay:
        account_id = await relay.backup_account(prefix)
    if account_id[:len(prefix)] != prefix:
        raise ProofError("the relay named an account with another fingerprint")
    return account_id


def _print_alerts(alerts: list[tuple[str, str]]) -> None:
    """One stderr line per alert: another device wrote something the log contradicts."""
    for code, message in alerts:
        say(f"alert [{code}]: {message}", err=True)


def _env_or_prompt(env: str, what: str) -> str:
    value = os.environ.get(env)
    if value is not None:
        return value
    return str(click.prompt(what, hide_input=True))


@click.group()
def space() -> None:
    """Create and list spaces."""


@space.command("create")
@click.argument("name", type=NAME)
@click.pass_context
def space_create(ctx: click.Context, name: str) -> None:
    """Create a space (a set of documents sharing keys)."""
    space_id = _run(_with_device(ctx, lambda d: d.create_space(name)))
    say(f"created space {name!r} ({space_id.hex()})")


@space.command("list")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def space_list(ctx: click.Context, as_json: bool) -> None:
    """List spaces this device can read."""
    async def go(d: Device) -> list[dict[str, str]]:
        return [{"name": n, "id": s.hex()} for s, n in d.spaces()]
    rows = _run(_with_device(ctx, go))
    _emit(rows, as_json, lambda c: _lines(
        c, [f"{r['name'] or '(unnamed)'}  {r['id']}" for r in rows]))


@space.command("policy")
@click.argument("name")
@click.option("--reencrypt", type=click.Choice(["lazy", "eager"]),
              help="After a revocation: re-encrypt snapshots at the next compaction (lazy, "
                   "the default) or at once (eager).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def space_policy(ctx: click.Context, name: str, reencrypt: str | None, as_json: bool) -> None:
    """Show or set a space's re-encryption policy (synced to every device)."""
    async def go(d: Device) -> dict[str, str]:
        space_id = d.space_by_name(name)
        if reencrypt is not None:
            d.set_space_policy(space_id, reencrypt)
            await d.sync()
        return {"space": name, "id": space_id.hex(), "reencrypt": d.space_policy(space_id)}
    info = _run(_with_device(ctx, go))
    _emit(info, as_json, lambda c: c.line(f"space {name!r}: reencrypt = {info['reencrypt']}"))


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


def device_name(device: Device, device_hex: str, space: bytes | None = None) -> str:
    """The name of a record's author device; a device of another account (a
    shared space's member) also shows the start of that account's fingerprint."""
    try:
        found = author_device(device, space, bytes.fromhex(device_hex))
    except ValueError:
        found = None
    if found is None:
        return device_hex[:12]
    account, rec = found
    if account == device.account.account_id:
        return rec.name
    return f"{rec.name} (account {fingerprint(account)[:9]})"


def _author_name(device: Device, v: KvVersion, space: bytes) -> str:
    return "an older sddsf" if v.author is None else device_name(device, v.author, space)


def _conflict_rows(device: Device, kv: KeyValue, e: KvEntry) -> list[dict[str, Any]]:
    return [{"version": h.id, "value": h.value, "author": h.author,
             "author_name": _author_name(device, h, kv.space), "ts_ms": h.ts_ms,
             "author_verified": h.verified} for h in e.heads]


def _kv_notes(kv: KeyValue) -> None:
    for a in kv.alerts:
        by = f"device {a.by[:12]}" if a.by else "an unknown device"
        say(f"warning: a record of key {a.key!r} was {a.what} by {by}; it is not used",
            err=True)


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
    say(f"{space_name}: {key} set (run `sddsf sync` to share it)")
    if replaced:
        say(f"note: this value replaces {replaced} concurrent values of {key!r}", err=True)


@click.command()
@click.argument("space_name")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
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
        return e, _conflict_rows(d, kv, e) if e.conflict else []
    e, rows = _run(_with_device(ctx, go))
    if not e.conflict:
        # The value itself, unchanged (it is what scripts read with `$(sddsf get ...)`).
        _emit({"key": key, "value": e.value}, as_json, lambda c: click.echo(str(e.value)))
        return
    say(f"note: key {key!r} has {len(rows)} concurrent values (written on devices that had "
        f"not seen each other's); `sddsf put {space_name} {key} -` with the one to keep "
        "ends the conflict", err=True)

    def render(c: Out) -> None:
        for r in rows:
            c.line(f"{r['author_name']}: " + ("(removed)" if r["value"] is None
                                               else str(r["value"])))
    _emit({"key": key, "value": e.value, "conflict": True, "values": rows}, as_json, render)


@click.command("ls")
@click.argument("space_name")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
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
            names = ", ".join(_author_name(d, h, kv.space) for h in e.heads)
            lines.append(f"{e.key}: CONFLICT, {len(e.heads)} concurrent values ({names}); "
                         f"`sddsf get {space_name} {e.key}` shows them")
        _kv_notes(kv)
        return data, lines
    items, lines = _run(_with_device(ctx, go))

    _emit(items, as_json, lambda c: _lines(c, lines))


@click.command("rm")
@click.argument("space_name")
@click.argument("key")
@click.pass_context
def rm(ctx: click.Context, space_name: str, key: str) -> None:
    """Remove KEY from the space's key-value document (synced on `sddsf sync`)."""
    async def go(d: Device) -> None:
        _kv(d, space_name).rm(key, space_name)
    _run(_with_device(ctx, go))
    say(f"{space_name}: {key} removed (run `sddsf sync` to share it)")


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


class _Watch:
    """What ``sync --watch`` shows: one line per change or state transition (never a
    line per idle cycle) and, on a terminal, a status line that is redrawn."""

    def __init__(self, device: CliDevice, as_json: bool) -> None:
        self.device = device
        self.as_json = as_json
        self.out = Out()
        self.online: bool | None = None
        self.last_error = ""
        self.status: Any = None
        self.read_only = False  # the relay's controller holds this device read-only

    def event(self, kind: str, text: str, **fields: Any) -> None:
        now = iso_time(int(time.time() * 1000))
        if self.as_json:
            click.echo(json.dumps({"event": kind, "at": now, **fields}, sort_keys=True))
        else:
            self.out.line(("dim", f"{now}  "), text)
        self.redraw()

    def redraw(self) -> None:
        if self.status is None:
            return
        state = {None: "connecting", True: "connected", False: "offline"}[self.online]
        last = iso_time(self.device.last_sync_ms()) or "never"
        self.status.update(f"watching {len(self.device.spaces())} space(s) on "
                           f"{self.device.relay_url}: {state}; last sync {last}; "
                           f"{self.device.pending_count()} edit(s) pending (Ctrl-C stops)")

    def synced(self, report: SyncReport) -> None:
        if self.online is not True:
            again = self.online is False
            self.online, self.last_error = True, ""
            self.event("online", ("reconnected to " if again else "connected to ")
                       + self.device.relay_url, relay=self.device.relay_url)
        if report.read_only != self.read_only:
            self.read_only = report.read_only
            if report.read_only:
                self.event("read_only", read_only_message(report.read_only_reason,
                                                          self.device.pending_count()),
                           code=Code.POLICY_READ_ONLY.value, error=report.read_only_reason)
            else:
                self.event("writable", "the relay accepts this device's edits again")
        codes = sorted({code for code, _ in report.rejected})
        if report.pushed or report.applied or codes or report.enacted or report.rotated:
            parts = []
            if report.pushed:
                parts.append(f"sent {report.pushed} edit(s)")
            if report.applied:
                parts.append(f"received {report.applied} edit(s)")
            if codes:
                parts.append(f"refused {len(report.rejected)} ({', '.join(codes)})")
            if report.enacted:
                parts.append(f"carried out {report.enacted} approved change(s)")
            if report.rotated:
                parts.append(f"{report.rotated} space(s) moved to a new key")
            self.event("synced", "; ".join(parts), pushed=report.pushed,
                       applied=report.applied, rejected=[list(r) for r in report.rejected],
                       enacted=report.enacted, rotated=report.rotated)
        else:
            self.redraw()

    def peer_applied(self, report: Any, then: Callable[[], None] | None = None) -> None:
        """Ops from peers were applied (``then``: e.g. wake a relay sync to carry them)."""
        self.event("peers", f"received {report.applied} edit(s) from peers",
                   applied=report.applied)
        if then is not None:
            then()

    def failed(self, exc: SddsfError) -> None:
        offline = isinstance(exc, UnavailableError)
        if offline and self.online is False:
            return  # still offline: said once
        if not offline and exc.message == self.last_error:
            return
        self.last_error = exc.message
        if offline:
            self.online = False
            self.event("offline", f"relay unreachable ({exc.message}); edits stay queued, "
                       "retrying", error=exc.message, code=exc.code.value)
        else:
            self.event("error", f"sync refused: {exc.message} [{exc.code.value}]",
                       error=exc.message, code=exc.code.value)


#: How often ``sync --watch`` looks for edits other commands queued in this home.
_LOCAL_POLL_S = 1.0


async def _local_edits(device: CliDevice, changed: Callable[[], None]) -> None:
    """Wake the runner when another command (``sddsf put`` in another terminal)
    queued edits in this home's store; the runner only hears of its own."""
    seen = device.pending_count()
    while True:
        await asyncio.sleep(_LOCAL_POLL_S)
        pending = device.pending_count()
        if pending > seen:
            changed()
        seen = pending


async def _watch(device: CliDevice, as_json: bool, interval: float,
                 peering: PeerOptions | None = None) -> None:
    """Keep ``device`` in sync until SIGINT/SIGTERM: with the WebSocket runner
    (modes relay and hybrid) and with peers (modes p2p and hybrid)."""
    from sddsf.client.runner import Runner, RunnerSettings  # noqa: PLC0415 - --watch only

    mode = peering.mode if peering is not None else "relay"

    view = _Watch(device, as_json)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = Runner(device, RunnerSettings(full_check_s=interval), on_sync=view.synced,
                    on_error=view.failed)
    console = view.out.console
    status_line = (console.status("connecting", spinner="dots")
                   if console.is_terminal and not as_json else contextlib.nullcontext())
    peer_sync: Any = None
    with status_line as view.status:
        if peering is not None and mode != "relay":
            # Ops learnt from peers wake a relay sync that carries them (hybrid).
            peer_sync = await start_peers(device, peering, view.event, on_applied=(
                (lambda report: view.peer_applied(report, runner.changed))
                if mode == "hybrid" else view.peer_applied))
        if mode != "p2p":
            await runner.start()
            runner.changed()  # a first sync at once: push what is pending, pull what is new
        local = asyncio.create_task(_local_edits(device, runner.changed))
        try:
            await stop.wait()
        finally:
            # Also when cancelled (a Ctrl-C before the handlers above were in
            # place): the runner and the peers stop before the device closes.
            local.cancel()
            if peer_sync is not None:
                await peer_sync.stop()
            if mode != "p2p":
                await runner.stop()
    view.status = None
    view.event("stopped", f"stopped; {device.pending_count()} edit(s) pending",
               pending=device.pending_count())


@click.command()
@click.option("--watch", is_flag=True,
              help="Keep syncing: live over the relay's WebSocket, printing only changes "
                   "and connection changes (Ctrl-C stops).")
@click.option("--interval", default=60.0, show_default=True, type=click.FloatRange(1, 3600),
              help="With --watch: seconds between full checks when nothing happens.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@peer_options
@click.pass_context
def sync(ctx: click.Context, watch: bool, interval: float, as_json: bool,
         mode: str | None, p2p_flag: bool, listen: tuple[str, ...], peers: tuple[str, ...],
         no_mdns: bool) -> None:
    """Push pending edits, pull and verify everything, apply (--watch: keep syncing,
    through the relay, directly with peers, or both)."""
    peering = resolve(mode, p2p_flag, listen, peers, no_mdns, watch)
    async def once(d: CliDevice) -> dict[str, Any]:
        with _pull_progress(enabled=not as_json) as progress:
            r = await d.sync(progress)
        _print_alerts(r.alerts)
        result: dict[str, Any] = {
            "pushed": r.pushed, "pulled": r.pulled, "applied": r.applied,
            "rejected": r.rejected, "snapshots_loaded": r.snapshots_loaded,
            "skipped": [{"offset": k.offset, "author": k.author.hex(), "seq": k.seq,
                         "code": k.code, "message": k.message} for k in r.skipped],
            "read_only": r.read_only, "pending": d.pending_count()}
        if r.read_only:
            result["read_only_reason"] = r.read_only_reason
        if r.alerts:  # what this device found wrong with another device
            result["alerts"] = [list(a) for a in r.alerts]
        if r.unreachable:  # shared spaces this account was removed from (or left)
            result["unreachable"] = [{"id": s.hex(), "name": d.ident.space_label(s)}
                                     for s in r.unreachable]
        if r.not_writable:  # shared spaces where this account only reads
            result["not_writable"] = [{"id": s.hex(), "name": d.ident.space_label(s)}
                                      for s in r.not_writable]
        return result

    if watch:
        # The watcher locks the home only while it syncs, so other commands get turns.
        _run(_with_device(ctx, lambda d: _watch(d, as_json, interval, peering),
                          lock="operation"))
        return
    result = _run(_with_device(ctx, once))
    _emit(result, as_json, lambda c: c.line(
        f"synced: pushed {result['pushed']}, pulled {result['pulled']}, applied "
        f"{result['applied']}"))
    if result["skipped"]:
        say(f"warning: the relay's log holds {len(result['skipped'])} op(s) of a revoked device "
            "written after its revocation; they were not applied (the relay should have "
            "refused them: tell its operator to run `sddsf relay fsck`)", err=True)
    for space in result.get("not_writable", []):
        say(f"note: this account is a reader of space {space['name']}: its edits stay on "
            "this device, not sent, until an admin of the space makes it a writer",
            err=True)
    for gone in result.get("unreachable", []):
        say(f"note: space {gone['name']} is no longer shared with this account (removed, "
            "or you left); what was synced stays readable here, nothing more syncs",
            err=True)
    codes = [code for code, _ in result["rejected"]]
    if "chain_fork" in codes:
        say("note: this device's chain had diverged (restored from an older copy?); "
            "its edits were sealed again and sent", err=True)
    lost = [c for c in codes if c != "chain_fork"]
    if lost:
        raise UsageError(f"the relay refused {len(lost)} op(s) ({', '.join(sorted(set(lost)))})"
                         "; they are kept in this device's store under 'failed'")
    if result["read_only"]:
        raise AuthorizationError(read_only_message(result["read_only_reason"],
                                                   result["pending"]),
                                 Code.POLICY_READ_ONLY)


def read_only_message(reason: str, pending: int) -> str:
    """What a device the relay's controller holds read-only tells its user."""
    why = f" ({reason.rstrip('.')})" if reason else ""
    return (f"the relay's security controller holds this device read-only{why}: it pulls "
            f"but cannot send; its {pending} edit(s) stay pending here, nothing is lost. "
            "Another device of the account lifts it with `sddsf alerts --ack ID` (or it "
            "expires); then sync again")


#: How long ``status`` waits for the relay before calling it unreachable.
_STATUS_PROBE_S = 10.0


async def _probe_relay(d: Device) -> str | None:
    """None if the relay answers this device, else why not (one sentence)."""
    try:
        await asyncio.wait_for(d.relay.list_spaces(), _STATUS_PROBE_S)
    except TimeoutError:
        return f"the relay at {d.relay_url} did not answer within {_STATUS_PROBE_S:.0f} s"
    except SddsfError as exc:
        return f"{exc.message} [{exc.code.value}]"
    return None


@click.command()
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """This device, its relay (reachable?) and last sync, pending edits, spaces, devices."""
    from sddsf.client import agent  # noqa: PLC0415

    async def go(d: CliDevice) -> dict[str, Any]:
        state = d.registry()
        heads = {}
        for s, n in d.spaces():
            heads[n or s.hex()] = {"verified_log_size": d.verified_size(s)}
        problem = await _probe_relay(d)
        unlocked = None
        if d.key_kind == "passphrase":
            with contextlib.suppress(ConfigError, OSError):  # no agent directory: locked
                unlocked = agent.status(_home(ctx))
        return {
            "device": d.name, "device_id": d.device_id.hex(),
            "account_fingerprint": d.account.fingerprint,
            "account_id": d.account.account_id.hex(), "relay": d.relay_url,
            "relay_reachable": problem is None, "relay_error": problem,
            "last_sync": iso_time(d.last_sync_ms()),
            "store_key": d.key_kind,
            "unlocked_until": iso_time(unlocked.expires_ms) if unlocked else None,
            "pending_ops": d.pending_count(), "spaces": heads,
            "devices": [{"name": r.name, "status": r.status.value,
                         "id": r.device_id.hex()} for r in state.devices.values()],
            "checked_at": iso_time(int(time.time() * 1000))}
    info = _run(_with_device(ctx, go))

    def render(c: Out) -> None:
        c.line(("bold", info["device"]), f" (account {info['account_fingerprint']})")
        if info["relay_reachable"]:
            c.line(f"relay {info['relay']}: reachable")
        else:
            c.line(f"relay {info['relay']}: ", ("red", "unreachable"),
                   f" ({info['relay_error']})")
        c.line(f"last successful sync: {info['last_sync'] or 'never (by this CLI)'}")
        if info["store_key"] == "plaintext":
            c.line(("red", "WARNING: this device's store key is kept in plaintext"))
        elif info["unlocked_until"]:
            c.line(f"store unlocked until {info['unlocked_until']} (`sddsf lock` ends it)")
        c.line(f"pending edits: {info['pending_ops']}")
        for name, h in info["spaces"].items():
            c.line(f"space {name}: verified log size {h['verified_log_size']}")
        for dev in info["devices"]:
            c.line(f"device {dev['name']} ({dev['id'][:12]}): {dev['status']}")
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
    cli.add_command(peers_command)
