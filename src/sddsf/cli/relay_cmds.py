"""``sddsf relay ...`` commands besides ``serve``: ``fsck`` (a relay database) and
``set-url`` (where this device finds its relay)."""

from __future__ import annotations

import json

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


@click.command("fsck")
@click.option("--db", required=True,
              help="The relay's database: sqlite:///PATH or postgresql://USER@HOST/DB.")
@click.option("--schema", help="PostgreSQL schema holding the relay's tables "
                               "(default: the server's search path).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def fsck_cmd(db: str, schema: str | None, as_json: bool) -> None:
    """Check a relay database offline: recompute every Merkle root, frontier and
    node from the stored leaves, verify every device chain and registry.

    Read only (safe while the relay runs). Exit status 0 when clean, 1 when
    anything is found (each finding has a stable code).
    """
    from sddsf.relay.fsck import describe, run_fsck  # noqa: PLC0415 - keep start-up light

    report = run_fsck(db, schema=schema)
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
