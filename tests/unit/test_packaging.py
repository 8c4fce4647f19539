"""Packaging: a library user does not install the relay's web stack or the CLI's
terminal libraries (extras ``relay`` and ``cli``); the README's first command
installs what the demo needs; the license is stated once, as SPDX, with its
text in ``LICENSE``."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: What only the relay (web stack, metrics, settings) or the CLI (terminal) use.
RELAY_ONLY = {"fastapi", "uvicorn", "prometheus-client", "pydantic-settings"}
CLI_ONLY = {"click", "rich", "segno"}


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=;\s]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_library_needs_neither_the_web_stack_nor_the_terminal_libraries() -> None:
    core = names(PROJECT["dependencies"])
    assert not core & (RELAY_ONLY | CLI_ONLY), core & (RELAY_ONLY | CLI_ONLY)
    extras = PROJECT["optional-dependencies"]
    assert names(extras["relay"]) >= RELAY_ONLY
    assert names(extras["cli"]) >= CLI_ONLY and "sddsf[relay]" in extras["cli"]
    assert any(r.startswith("sddsf[") and "cli" in r for r in extras["test"])


def test_the_library_imports_without_them() -> None:
    # Those packages made unimportable: the application API and the protocol
    # core still import and work (the facade's names resolve).
    blocked = sorted({"fastapi", "starlette", "uvicorn", "prometheus_client",
                      "pydantic_settings", "click", "rich", "segno"})
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("blocked: " + name)
        return None
sys.meta_path.insert(0, Block())
import sddsf
for name in sddsf.__all__:
    getattr(sddsf, name)
import sddsf.sync_api, sddsf.client.relay_client, sddsf.protocol.envelope
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_readme_command_one_installs_the_cli_extra() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert re.search(r"pip install '\.\[cli\]'", blocks[0]), blocks[0]


def test_license_is_spdx_with_its_text() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert not any(c.startswith("License ::") for c in PROJECT.get("classifiers", []))


def test_the_command_without_the_cli_extra_says_what_to_install() -> None:
    """A library install has the ``sddsf`` command but not click: the command
    prints one line naming the extra, not an ImportError traceback."""
    code = ("import sys; sys.modules['click'] = None; "  # as if click were not installed
            "from sddsf._entry import main; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == ("error: the sddsf command needs the 'cli' extra (click is "
                                   "not installed): pip install 'sddsf[cli]'")


def test_the_console_script_is_the_entry_shim() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"sddsf": "sddsf._entry:main"}
