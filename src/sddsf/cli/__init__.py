"""The ``sddsf`` command line: thin commands over the library, no protocol logic here.

Output rules (every command): data is printed as text through
:mod:`sddsf.cli.output`, never as markup; every text parameter is checked to be
UTF-8 before anything runs (:mod:`sddsf.cli.params`); failures are one line
``error: ... [code]`` on stderr with exit code 1.
"""

from __future__ import annotations

import os
import resource
import sys

import click

from sddsf import __version__
from sddsf.cli import (
    bridge_cmds,
    controller_cmds,
    device_cmds,
    encpolicy_cmds,
    pairing_cmds,
    recovery_cmds,
    relay_cmds,
    share_cmds,
    unlock_cmds,
    vault_cmds,
    web_cmds,
)
from sddsf.cli.output import JSON_HELP, clean
from sddsf.cli.params import guard_text_params
from sddsf.errors import ConfigError, SddsfError, UnavailableError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sddsf")
@click.option("--home", envvar="SDDSF_HOME", type=click.Path(file_okay=False),
              help="Device home directory (default: the platform's user data dir).")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """SDDSF: end-to-end encrypted, offline-first sync across your devices."""
    ctx.obj = {"home": home}


@cli.command()
@click.option("--quiet", is_flag=True, help="Print only the final verdict.")
def demo(quiet: bool) -> None:
    """Watch the whole job, narrated: pair, sync, attacks refused, recover.

    Runs in throw-away directories (nothing of yours is touched). Starts a
    relay on 127.0.0.1 and devices in separate homes (laptop, phone, tablet):
    creates an account, pairs the phone (code, QR code, matching words), edits
    on both and syncs, catches a relay that tampers with history, revokes the
    phone (it can neither write nor read what comes after), shares a note with
    a second person who is later removed (and reads nothing written after), and
    recovers the account on a new tablet from the recovery phrase. Exits 1 if
    any protection does not hold.
    """
    from sddsf.cli.demo import run_demo  # noqa: PLC0415 - keep CLI start-up light

    run_demo(quiet=quiet)


device_cmds.register(cli)
pairing_cmds.register(cli)
vault_cmds.register(cli)
recovery_cmds.register(cli)
controller_cmds.register(cli)
unlock_cmds.register(cli)
encpolicy_cmds.register(cli)
bridge_cmds.register(cli)
web_cmds.register(cli)
share_cmds.register(cli)


@cli.group()
def relay() -> None:
    """Run and manage a relay; point this device at a moved relay."""


relay_cmds.register(relay)


async def _check_storage(db: str) -> None:
    """Open and close the relay's storage once, so that a database that is missing
    or unreachable is one line before the server starts, not a traceback."""
    from sddsf.relay.storage import open_storage  # noqa: PLC0415

    storage = open_storage(db)
    try:
        await storage.open()
    except UnavailableError as exc:
        if "does not exist" in exc.message and db.startswith(("postgresql:", "postgres:")):
            name = db.split("?", 1)[0].rsplit("/", 1)[-1]
            raise ConfigError(f"{exc.message.split(' is unavailable (')[0]}: the database "
                              f"{name!r} does not exist; create it first (e.g. `createdb "
                              f"{name}`, or CREATE DATABASE in psql), then start the relay "
                              "again") from None
        raise
    await storage.close()


@relay.command("serve")
@click.option("--db", help="sqlite:///PATH (default: user data dir) or postgresql://USER@HOST/DB")
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default 8787).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file with relay settings (see docs/operations.md).")
@click.option("--secrets-dir", type=click.Path(file_okay=False),
              help="Directory of secret settings, one file per setting named like its "
                   "environment variable (default: SDDSF_RELAY_SECRETS_DIR).")
@click.option("--workers", type=int, help="Worker processes (default 1).")
@click.option("--log-format", type=click.Choice(["text", "json"]),
              help="Log lines as text (default) or one JSON object per line.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              help="Lowest level logged (default info; warning drops the access log).")
def relay_serve(db: str | None, host: str | None, port: int | None,
                config_file: str | None, secrets_dir: str | None, workers: int | None,
                log_format: str | None, log_level: str | None) -> None:
    """Serve the relay (HTTP + WebSocket) until interrupted."""
    import asyncio  # noqa: PLC0415

    from sddsf.relay.serve import run  # noqa: PLC0415
    from sddsf.relay.settings import load_settings  # noqa: PLC0415

    settings = load_settings(config_file, secrets_dir=secrets_dir, db=db, host=host, port=port,
                             workers=workers, log_format=log_format, log_level=log_level)
    asyncio.run(_check_storage(settings.db))
    run(settings)


def _finish(group: click.Group) -> None:
    """Rules for every command, including ones added later: text parameters are
    UTF-8 (checked before the command runs), and every ``--json`` has help."""
    guard_text_params(group)
    stack: list[click.Command] = [group]
    while stack:
        command = stack.pop()
        for param in command.params:
            if isinstance(param, click.Option) and "--json" in param.opts and not param.help:
                param.help = JSON_HELP
        if isinstance(command, click.Group):
            stack.extend(command.commands.values())


_finish(cli)


def _no_core_dumps() -> None:
    # A core dump would write the process's memory (storage key, decrypted
    # documents, vault secrets) to disk: none, soft and hard limit alike.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main() -> None:
    """Console-script entry point: typed errors become one line and exit code 1."""
    _no_core_dumps()
    from sddsf.client.agent import AgentKeyCache  # noqa: PLC0415
    from sddsf.client.home import set_key_cache  # noqa: PLC0415

    set_key_cache(AgentKeyCache())  # an unlocked store opens without the passphrase
    try:
        cli.main(standalone_mode=False)
    except SddsfError as exc:
        # The message may quote a relay or another device: shown as inert text.
        click.echo(f"error: {clean(exc.message)} [{exc.code.value}]", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("SDDSF_DEBUG"):
            raise
        click.echo(f"error: unexpected {type(exc).__name__}: {clean(exc)} (a bug: please "
                   "report it; SDDSF_DEBUG=1 shows the traceback)", err=True)
        sys.exit(2)
