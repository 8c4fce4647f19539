"""Relay maintenance commands: ``sddsf relay fsck``."""

from __future__ import annotations

import json

import click

__all__ = ["register"]


def register(relay: click.Group) -> None:
    """Add the maintenance commands to the ``sddsf relay`` group."""
    relay.add_command(fsck_cmd)


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
            click.echo(line)
    if not report.ok:
        raise SystemExit(1)
