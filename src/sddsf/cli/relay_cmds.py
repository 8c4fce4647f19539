"""``sddsf relay ...`` commands besides ``serve``: ``fsck`` (a relay database),
``backup``, ``restore``, ``backup-keygen`` (relay maintenance) and ``set-url``
(where this device finds its relay)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from sddsf.cli.device_cmds import CliDevice, _run, _with_device
from sddsf.cli.output import say
from sddsf.cli.params import TEXT
from sddsf.client.relay_client import RelayClient
from sddsf.errors import Code, ConfigError, ProofError, SddsfError, UsageError

__all__ = ["register"]


def register(relay: click.Group) -> None:
    """Add the maintenance commands to the ``sddsf relay`` group."""
    relay.add_command(fsck_cmd)
    relay.add_command(set_url)
    relay.add_command(backup_cmd)
    relay.add_command(restore_cmd)
    relay.add_command(backup_keygen_cmd)


@click.command("fsck")
@click.option("--db", required=True,
              help="The relay's database: sqlite:///PATH or postgresql://USER@HOST/DB.")
@click.option("--schema", help="PostgreSQL schema holding the relay's tables "
                               "(default: the server's search path).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--heads", "heads_file", type=click.Path(dir_okay=False),
              help="Also check the logs against these signed tree heads (a heads file from "
                   "'sddsf relay restore --heads-out').")
@click.option("--relay-id", help="The relay's public key (hex) the heads must verify with "
                                 "(default: the relay key file's).")
@click.option("--key-file", help="The relay key file (default: as 'sddsf relay serve' finds "
                                 "it).")
def fsck_cmd(db: str, schema: str | None, as_json: bool, heads_file: str | None,
             relay_id: str | None, key_file: str | None) -> None:
    """Check a relay database offline: recompute every Merkle root, frontier and
    node from the stored leaves, verify every device chain and registry.

    Read only (safe while the relay runs). Exit status 0 when clean, 1 when
    anything is found (each finding has a stable code).
    """
    from sddsf.relay.fsck import describe, run_fsck  # noqa: PLC0415 - keep start-up light

    report = run_fsck(db, schema=schema)
    if heads_file:
        report.findings.extend(_heads_findings(db, schema, heads_file, relay_id, key_file))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in describe(report):
            say(line)
    if not report.ok:
        raise SystemExit(1)


async def _relay_key_at(device: CliDevice, url: str) -> bytes:
    """The tree-head key of the relay at ``url``, from a session opened there."""
    probe = RelayClient(url, device=device.keys, account_id=device.account.account_id)
    try:
        await probe.list_spaces()
    finally:
        await probe.aclose()
    if probe.relay_id is None:
        raise ConfigError(f"the relay at {url} did not identify itself")
    return probe.relay_id


@click.command("set-url")
@click.argument("url", type=TEXT)
@click.pass_context
def set_url(ctx: click.Context, url: str) -> None:
    """Point this device at its relay's new URL (the relay moved, or `init` was given
    a wrong one). The relay at URL must hold this device's account and sign with
    the key this device pinned; another relay is refused."""
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"{url!r} is not a relay URL: give http://HOST:PORT or https://...")

    async def go(d: CliDevice) -> str:
        old = d.relay_url
        try:
            key = await _relay_key_at(d, url)
        except SddsfError as exc:
            raise type(exc)(f"{exc.message}; the relay URL stays {old}", exc.code) from None
        if d.relay_key is not None and key != d.relay_key.raw:
            raise ProofError(f"the relay at {url} signs with another key than the relay this "
                             f"device pinned, so it is not this account's relay; the relay "
                             f"URL stays {old}", Code.TREE_HEAD_INVALID)
        d.set_relay_url(url, key)
        return old

    old = _run(_with_device(ctx, go))
    say(f"relay URL changed from {old} to {url} (same relay key)")


def _heads_findings(db: str, schema: str | None, heads_file: str, relay_id: str | None,
                    key_file: str | None) -> list[Any]:
    """``fsck --heads``: the findings of the signed-heads check (kept apart)."""
    import asyncio  # noqa: PLC0415

    from sddsf.crypto import Ed25519PublicKey  # noqa: PLC0415
    from sddsf.relay.backup import existing_relay_key  # noqa: PLC0415
    from sddsf.relay.fsck import check_heads, read_heads_file  # noqa: PLC0415

    _, heads = read_heads_file(heads_file)
    if relay_id:
        try:
            key = Ed25519PublicKey.from_bytes(bytes.fromhex(relay_id))
        except ValueError:
            raise ConfigError("--relay-id is the relay's public key in hex") from None
    else:
        signing = existing_relay_key(_relay_key_file(None, key_file))
        if signing is None:
            raise ConfigError("no relay key file to check the heads with: pass --relay-id "
                              "(the relay's public key, as devices pinned it) or --key-file")
        key = signing.public
    click.echo(f"heads: checking {len(heads)} signed heads from {heads_file} with relay key "
               f"{key.raw.hex()}", err=True)
    return asyncio.run(check_heads(db, heads, key, schema=schema))


# ------------------------------------------------------------- backup / restore
_F = TypeVar("_F", bound=Callable[..., Any])
_LOCATION = "a directory, or s3://BUCKET/PREFIX (credentials and endpoint: the usual AWS settings)"


def _relay_key_file(config_file: str | None, key_file: str | None) -> str:
    """The relay key file as ``sddsf relay serve`` resolves it (flag, env, config, default)."""
    from sddsf.relay.settings import load_settings  # noqa: PLC0415

    return load_settings(config_file, key_file=key_file).key_file


def _shown(url: str) -> str:
    """A database URL for output: a PostgreSQL password is masked."""
    if url.startswith("sqlite:///"):
        return url
    from sddsf.relay.storage.postgres import redact_dsn  # noqa: PLC0415 - needs asyncpg

    return redact_dsn(url)


_key_options = [
    click.option("--key-file", help="The relay key file (default: as 'sddsf relay serve' "
                                    "finds it: SDDSF_RELAY_KEY_FILE, --config, the data dir; "
                                    "SDDSF_RELAY_KEY_HEX wins)."),
    click.option("--config", "config_file", type=click.Path(dir_okay=False),
                 help="The relay's TOML settings file (for key_file)."),
    click.option("--schema", help="PostgreSQL schema holding the relay's tables."),
    click.option("--s3-endpoint", envvar="SDDSF_BACKUP_S3_ENDPOINT",
                 help="S3-compatible endpoint URL (default: AWS_ENDPOINT_URL_S3 / the AWS "
                      "configuration)."),
    click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
]


def _with(options: list[Any]) -> Callable[[_F], _F]:
    """Apply a shared list of click options (the first one listed comes first)."""
    def wrap(f: _F) -> _F:
        for option in reversed(options):
            f = option(f)
        return f
    return wrap


@click.command("backup")
@click.option("--db", required=True, help="The relay's database (read in one consistent "
                                          "snapshot; safe while the relay runs).")
@click.option("--to", "location", required=True, help=f"Where to write: {_LOCATION}.")
@click.option("--encrypt-to", envvar="SDDSF_BACKUP_ENCRYPT_TO",
              help="Operator X25519 public key (64 hex characters, or a KEY.pub file from "
                   "'sddsf relay backup-keygen'): every piece is encrypted to it. Without "
                   "it the backup is not encrypted.")
@click.option("--full", is_flag=True, help="Start a new chain instead of extending the "
                                           "latest backup in the location.")
@_with(_key_options)
def backup_cmd(db: str, location: str, encrypt_to: str | None, full: bool, key_file: str | None,
               config_file: str | None, schema: str | None, s3_endpoint: str | None,
               as_json: bool) -> None:
    """Back up a relay database: a consistent snapshot, incremental after the first
    backup in the location (only new op-log rows and changed pieces are written),
    with the relay's signed tree heads, signed by the relay key.

    The relay stores ciphertext only, so a backup never holds user plaintext;
    it does hold metadata (device names, public keys, sizes, timestamps):
    encrypt it with --encrypt-to (or SDDSF_BACKUP_ENCRYPT_TO).
    """
    import asyncio  # noqa: PLC0415

    from sddsf.relay import backup as rb  # noqa: PLC0415 - keep start-up light

    path = _relay_key_file(config_file, key_file)
    key = rb.existing_relay_key(path)
    if key is None:
        raise ConfigError(f"no relay key at {path}: the backup signs the relay's tree heads "
                          "and its manifest with it; pass --key-file (the file 'sddsf relay "
                          "serve' uses)")
    recipient = rb.parse_recipient(encrypt_to) if encrypt_to else None
    store = rb.open_store(location, s3_endpoint=s3_endpoint)
    report = asyncio.run(rb.create_backup(db, store, key, recipient=recipient, full=full,
                                          schema=schema))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        chain = (f"incremental on backup {report.parent}" if report.parent is not None
                 else "full")
        click.echo(f"backup {report.number} of {_shown(db)} to {location} ({chain}): "
                   f"{report.spaces} spaces, {report.ops} new ops, {report.audit_entries} new "
                   f"audit entries, {report.rows} other rows, {report.heads} signed heads; "
                   f"{report.written} pieces written ({report.bytes_written} bytes), "
                   f"{report.reused} unchanged pieces reused; {report.bytes_total} bytes to "
                   "restore")
    if recipient is None:
        click.echo("warning: this backup is NOT encrypted. It holds no plaintext of user data "
                   "(the relay never has any), but whoever reads it sees the relay's metadata: "
                   "device names and public keys, account and space ids, sizes, timestamps, "
                   "and the passphrase-backup blobs with their verifier hashes. Encrypt with "
                   "--encrypt-to (see 'sddsf relay backup-keygen') or SDDSF_BACKUP_ENCRYPT_TO.",
                   err=True)
    else:
        click.echo(f"encrypted to {recipient.hex()}", err=True)


@click.command("restore")
@click.option("--from", "location", required=True, help=f"The backups: {_LOCATION}.")
@click.option("--db", help="The NEW relay database to create (it must be empty).")
@click.option("--backup", "number", type=click.IntRange(min=1),
              help="The backup number to restore (default: the latest, which must be "
                   "complete).")
@click.option("--decrypt-key", envvar="SDDSF_BACKUP_DECRYPT_KEY",
              type=click.Path(dir_okay=False),
              help="The operator key file, for an encrypted backup.")
@click.option("--allow-new-relay-key", is_flag=True,
              help="Restore although the target relay's key is not the backup's (every "
                   "device will refuse the relay until it is set up again).")
@click.option("--check", is_flag=True, help="Read and verify the backup without writing a "
                                            "database.")
@click.option("--heads-out", type=click.Path(dir_okay=False),
              help="Write the backup's signed heads to this file, for "
                   "'sddsf relay fsck --heads'.")
@click.option("--no-fsck", is_flag=True, help="Skip the full fsck of the restored database.")
@_with(_key_options)
def restore_cmd(location: str, db: str | None, number: int | None, decrypt_key: str | None,
                allow_new_relay_key: bool, check: bool, heads_out: str | None, no_fsck: bool,
                key_file: str | None, config_file: str | None, schema: str | None,
                s3_endpoint: str | None, as_json: bool) -> None:
    """Create a new relay database from a backup, then verify it: every piece's hash,
    the manifest's and every tree head's signature by the relay key, every log's
    root at its signed size, and a full fsck.

    Stop the relay first and restore into a new, empty database. The target
    relay must use the backup's relay key (devices pinned it). Exit status 0
    when everything verifies, 1 otherwise.
    """
    import asyncio  # noqa: PLC0415

    from sddsf.crypto import Ed25519PublicKey  # noqa: PLC0415
    from sddsf.relay import backup as rb  # noqa: PLC0415
    from sddsf.relay.fsck import check_heads, describe, fsck, heads_document  # noqa: PLC0415

    if check == (db is not None):
        raise UsageError("pass --db URL to restore, or --check to verify without restoring")
    relay = rb.existing_relay_key(_relay_key_file(config_file, key_file))
    operator = rb.load_operator_key(decrypt_key) if decrypt_key else None
    store = rb.open_store(location, s3_endpoint=s3_endpoint)
    report = asyncio.run(rb.restore_backup(
        store, db, number=number, operator=operator,
        relay_key=relay.public if relay is not None else None,
        allow_new_relay_key=allow_new_relay_key, schema=schema))
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if heads_out:
        doc = heads_document(report.relay_id, report.heads, backup=report.number,
                             created_ms=report.created_ms)
        with open(heads_out, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
    lines: list[str] = []
    ok = True
    if db is not None and not no_fsck:
        checked = asyncio.run(fsck(db, schema=schema))
        checked.findings.extend(asyncio.run(check_heads(
            db, report.heads, Ed25519PublicKey.from_bytes(report.relay_id), schema=schema)))
        lines, ok = describe(checked), checked.ok
    verb = "checked" if db is None else f"restored into {_shown(db)}"
    if as_json:
        click.echo(json.dumps({**report.to_json(), "fsck": lines}, indent=2))
    else:
        click.echo(f"backup {report.number} from {location} {verb}: {report.spaces} spaces, "
                   f"{report.ops} ops ({report.nodes} Merkle nodes recomputed), "
                   f"{report.audit_entries} audit entries, {report.rows} other rows; "
                   f"{len(report.heads)} signed heads verified against the restored logs "
                   f"({report.pieces} pieces, {report.bytes_read} bytes)")
        for line in lines:
            click.echo(line)
    if not ok:
        raise SystemExit(1)


@click.command("backup-keygen")
@click.argument("key_file", type=click.Path(dir_okay=False))
def backup_keygen_cmd(key_file: str) -> None:
    """Create an operator key for encrypted relay backups: KEY_FILE (the private
    key, mode 0600; keep it off the relay host) and KEY_FILE.pub (the public key,
    for --encrypt-to). Prints the public key.
    """
    from sddsf.relay.backup import generate_operator_key  # noqa: PLC0415

    public = generate_operator_key(key_file)
    click.echo(public.hex())
    click.echo(f"private key: {key_file} (needed to restore; keep it apart from the backups), "
               f"public key: {key_file}.pub", err=True)
