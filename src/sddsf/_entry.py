"""The ``sddsf`` command's entry point: the CLI, or one line saying what to install.

The command's libraries (click, rich, segno, and the relay's web stack) are the
``cli`` extra; a library install (``pip install sddsf``) has the command too
but not them. Instead of a traceback, the command then says how to get them.
"""

from __future__ import annotations

import sys
from typing import Final

#: Top-level modules the ``cli`` extra brings (``sddsf[cli]`` includes ``sddsf[relay]``).
CLI_EXTRA_MODULES: Final = frozenset({
    "click", "rich", "segno", "fastapi", "uvicorn", "prometheus_client", "pydantic_settings",
    "starlette", "pydantic"})


def main() -> None:
    """Run the CLI; exit 1 with an install hint when a ``cli`` extra module is missing.

    Raises:
        SystemExit: always (the CLI's exit status, or 1 when the extra is missing).
    """
    try:
        from sddsf.cli import main as cli_main  # noqa: PLC0415 - the point of this module
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root not in CLI_EXTRA_MODULES:
            raise
        print(f"error: the sddsf command needs the 'cli' extra ({root} is not installed): "
              "pip install 'sddsf[cli]'", file=sys.stderr)
        raise SystemExit(1) from None
    cli_main()
