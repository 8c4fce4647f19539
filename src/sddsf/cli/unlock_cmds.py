"""``sddsf unlock`` / ``sddsf lock``: ask for the store passphrase once, not per command.

``unlock`` derives the storage key (Argon2id) once and hands it to this home's
unlock agent (:mod:`sddsf.client.agent`), which serves it to later commands of
the same user for a bounded time; ``lock`` makes the agent wipe it at once.
"""

from __future__ import annotations

import re

import click

from sddsf.cli.device_cmds import _home, _passphrase
from sddsf.cli.output import iso_time, say
from sddsf.client import agent
from sddsf.client.home import passphrase_key
from sddsf.errors import UsageError

__all__ = ["parse_duration", "register"]

_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> int:
    """Seconds in ``90``, ``90s``, ``15m`` or ``2h``.

    Raises:
        UsageError: anything else.
    """
    found = re.fullmatch(r"\s*(\d{1,6})\s*([smh]?)\s*", text.lower())
    if not found:
        raise UsageError(f"{text!r} is not a duration: give e.g. 90s, 15m or 2h")
    return int(found.group(1)) * _UNITS[found.group(2) or "s"]


@click.command()
@click.option("--for", "duration", default="15m", show_default=True, metavar="DURATION",
              help="How long the store stays unlocked (e.g. 90s, 15m, 2h; at most 12h).")
@click.pass_context
def unlock(ctx: click.Context, duration: str) -> None:
    """Ask for the store passphrase once; commands then run without asking until
    the time is up or `sddsf lock`. The key is kept in memory by a per-user agent
    (see docs/threat-model.md for the trade-off)."""
    seconds = parse_duration(duration)
    if not agent.MIN_TTL_S <= seconds <= agent.MAX_TTL_S:
        raise UsageError(f"--for must be between {agent.MIN_TTL_S} s and "
                         f"{agent.MAX_TTL_S // 3600} h")
    home = _home(ctx)
    key, record = passphrase_key(home, _passphrase())
    running = agent.start_agent(home, key, record, seconds)
    say(f"unlocked {home} until {iso_time(running.expires_ms)}; `sddsf lock` locks it now")


@click.command()
@click.pass_context
def lock(ctx: click.Context) -> None:
    """Forget the unlocked store key now (commands ask for the passphrase again)."""
    home = _home(ctx)
    if agent.lock(home):
        say(f"locked {home}")
    else:
        say(f"{home} was not unlocked")


def register(cli: click.Group) -> None:
    """Attach ``unlock`` and ``lock``."""
    cli.add_command(unlock)
    cli.add_command(lock)
