"""Recovery commands: ``recovery split`` (SLIP-39 Shamir shares of the account
secret) and ``backup enable`` / ``backup disable`` (a passphrase backup on the relay).

Both need the account secret, which no device keeps: the user gives the 24-word
recovery phrase (prompted, or ``--phrase-file``), and the command checks that it
belongs to this device's account before using it. Thin wrappers over
:mod:`sddsf.recovery`; no protocol logic here.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from sddsf.cli.device_cmds import _run, _with_device
from sddsf.client.controller import backup_minimums, refresh_encryption_policy
from sddsf.client.device import Device
from sddsf.errors import UsageError
from sddsf.protocol.identity import fingerprint
from sddsf.recovery import (
    check_secret_account,
    enable_backup,
    format_account_id,
    read_words_file,
    secret_from_phrase,
    split_shares,
)

__all__ = ["register"]

BACKUP_PASSPHRASE_ENV = "SDDSF_BACKUP_PASSPHRASE"  # noqa: S105 - a variable's name
SHARES_PASSPHRASE_ENV = "SDDSF_SHARES_PASSPHRASE"  # noqa: S105 - a variable's name


def _account_secret(account_id: bytes, phrase_file: str | None) -> bytes:
    """The account secret from the recovery phrase, checked against ``account_id``."""
    if phrase_file is not None:
        words = read_words_file(phrase_file)
    else:
        words = str(click.prompt("Recovery phrase (24 words)", hide_input=True))
    secret = secret_from_phrase(words)
    check_secret_account(secret, account_id)
    return secret


def _secret_prompt(env: str, what: str) -> str:
    value = os.environ.get(env)
    if value is not None:
        return value
    return str(click.prompt(what, hide_input=True, confirmation_prompt=True))


async def _account_id(device: Device) -> bytes:
    return device.account.account_id


def _write_shares(out_dir: str, shares: list[str]) -> list[Path]:
    directory = Path(out_dir)
    paths = [directory / f"share-{i}.txt" for i in range(1, len(shares) + 1)]
    taken = [p for p in paths if p.exists()]
    if taken:
        raise UsageError(f"{taken[0]} already exists; give an empty --out-dir")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path, share in zip(paths, shares, strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(share + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write the shares to {directory}: {exc.strerror or exc}"
                         ) from None
    return paths


@click.group("recovery")
def recovery_group() -> None:
    """Recovery material: Shamir shares of the account secret."""


@recovery_group.command("split")
@click.option("--threshold", type=int, default=2, show_default=True,
              help="How many shares recover the account.")
@click.option("--shares", "count", type=int, default=3, show_default=True,
              help="How many shares to make (at most 16).")
@click.option("--passphrase", "use_passphrase", is_flag=True,
              help="Protect the shares with a SLIP-39 passphrase (prompted twice, or "
                   f"{SHARES_PASSPHRASE_ENV}); recovery then needs it too.")
@click.option("--phrase-file", type=click.Path(dir_okay=False),
              help="File holding the 24-word recovery phrase (default: prompt).")
@click.option("--out-dir", type=click.Path(file_okay=False),
              help="Write share-1.txt, share-2.txt, ... (mode 0600) here instead of "
                   "showing them.")
@click.pass_context
def split(ctx: click.Context, threshold: int, count: int, use_passphrase: bool,
          phrase_file: str | None, out_dir: str | None) -> None:
    """Split the account secret into SLIP-39 shares; any THRESHOLD of them recover it."""
    account_id = _run(_with_device(ctx, _account_id))
    secret = _account_secret(account_id, phrase_file)
    passphrase = (_secret_prompt(SHARES_PASSPHRASE_ENV, "Passphrase for the shares")
                  if use_passphrase else "")
    shares = split_shares(secret, threshold, count, passphrase)
    need = f"any {threshold} of the {count} shares recover the account"
    if use_passphrase:
        need += ", together with the passphrase"
    if out_dir:
        paths = _write_shares(out_dir, shares)
        click.echo(f"Wrote {count} shares to {Path(out_dir)} ({need}):")
        for path in paths:
            click.echo(f"  {path}")
    else:
        click.echo(f"Shamir shares ({need}); write each one down and keep them in "
                   "different places:\n")
        for i, share in enumerate(shares, start=1):
            click.echo(f"Share {i} of {count}:")
            click.echo(f"  {share}\n")
    click.echo("Fewer shares reveal nothing about the account secret.")


@click.group("backup")
def backup_group() -> None:
    """A passphrase-protected backup of the account secret on the relay."""


@backup_group.command("enable")
@click.option("--phrase-file", type=click.Path(dir_okay=False),
              help="File holding the 24-word recovery phrase (default: prompt).")
@click.pass_context
def enable(ctx: click.Context, phrase_file: str | None) -> None:
    """Store the account secret on the relay, encrypted under a passphrase
    (prompted twice, or SDDSF_BACKUP_PASSPHRASE); replaces an earlier backup."""
    async def go(d: Device) -> tuple[bytes, str, str]:
        aid = d.account.account_id
        secret = _account_secret(aid, phrase_file)
        passphrase = _secret_prompt(BACKUP_PASSPHRASE_ENV, "Backup passphrase")
        await refresh_encryption_policy(d)  # the relay's KDF minimums apply
        kdf = await enable_backup(d.relay, aid, secret, passphrase,
                                  minimums=backup_minimums(d))
        return aid, d.relay_url, f"Argon2id t={kdf.t}, m={kdf.m_kib // 1024} MiB, p={kdf.p}"

    account_id, relay_url, params = _run(_with_device(ctx, go))
    shown = format_account_id(account_id)
    click.echo(f"Passphrase backup stored on {relay_url} ({params}).")
    click.echo(f"Account id (you need it to recover with the passphrase): {shown}")
    click.echo(f"Account fingerprint (--account takes it too): {fingerprint(account_id)}")
    click.echo("To recover on a new device:")
    click.echo(f"  sddsf recover --relay {relay_url} --passphrase --account {shown}")
    click.echo("Wrong passphrases lock the backup for a while; the relay can test guesses "
               "against it, so keep the passphrase long and unique.")


@backup_group.command("disable")
@click.pass_context
def disable(ctx: click.Context) -> None:
    """Delete the account's passphrase backup from the relay."""
    async def go(d: Device) -> bool:
        return await d.relay.delete_backup(d.account.account_id)

    if _run(_with_device(ctx, go)):
        click.echo("Passphrase backup deleted from the relay.")
    else:
        click.echo("This account had no passphrase backup on the relay.")


def register(cli: click.Group) -> None:
    """Attach ``recovery`` and ``backup`` to the top-level group."""
    cli.add_command(recovery_group)
    cli.add_command(backup_group)
