"""The ``sddsf`` command line: thin commands over the library, no protocol logic here."""

from __future__ import annotations

import os
import sys

import click

from sddsf import __version__
from sddsf.cli import (
    controller_cmds,
    device_cmds,
    encpolicy_cmds,
    pairing_cmds,
    recovery_cmds,
    relay_cmds,
    vault_cmds,
)
from sddsf.errors import SddsfError

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
    """Walk through the protocol core: account, devices, encrypted ops, attacks refused."""
    from sddsf.cli.demo import run_demo  # noqa: PLC0415 - keep CLI start-up light

    run_demo(quiet=quiet)


device_cmds.register(cli)
pairing_cmds.register(cli)
vault_cmds.register(cli)
recovery_cmds.register(cli)
controller_cmds.register(cli)
encpolicy_cmds.register(cli)


@cli.group()
def relay() -> None:
    """Run and manage a relay."""


relay_cmds.register(relay)


@relay.command("serve")
@click.option("--db", help="sqlite:///PATH (default: user data dir) or postgresql://USER@HOST/DB")
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default 8787).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file with relay settings (see docs/operations.md).")
def relay_serve(db: str | None, host: str | None, port: int | None,
                config_file: str | None) -> None:
    """Serve the relay (HTTP + WebSocket) until interrupted."""
    from sddsf.relay.serve import run  # noqa: PLC0415
    from sddsf.relay.settings import load_settings  # noqa: PLC0415

    settings = load_settings(config_file, db=db, host=host, port=port)
    click.echo(f"sddsf relay on http://{settings.host}:{settings.port} "
               f"({settings.db.split('://', 1)[0]})", err=True)
    run(settings)


def main() -> None:
    """Console-script entry point: typed errors become one line and exit code 1."""
    try:
        cli.main(standalone_mode=False)
    except SddsfError as exc:
        click.echo(f"error: {exc.message} [{exc.code.value}]", err=True)
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
        click.echo(f"error: unexpected {type(exc).__name__}: {exc} (a bug: please report it; "
                   "SDDSF_DEBUG=1 shows the traceback)", err=True)
        sys.exit(2)
