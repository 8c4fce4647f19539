"""README's Python example runs, and the CLI's demo and error path behave."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from sddsf.cli import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_has_exactly_two_setup_commands() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 2
    assert "sddsf demo" in blocks[0]
    assert "pytest" in blocks[1]


def test_readme_python_example_runs() -> None:
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code, "README lost its Python example"
    namespace: dict[str, object] = {}
    exec(compile(code[0], "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["state"].active_devices()[0].name == "laptop"  # type: ignore[attr-defined]


def test_demo_runs_and_every_protection_holds() -> None:
    """The main job: an embedded relay, three device homes, every step checked."""
    result = CliRunner().invoke(cli, ["demo"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "refused: proof_invalid" in out  # the tampering relay is caught
    assert "refused: the phone's write" in out  # the revoked device is cut off
    assert "the tablet reads the whole history" in out and "coffee" in out
    assert "active devices: ['tablet']" in out
    assert "every protection held" in out


def test_console_entry_point_reports_usage_errors_in_one_line() -> None:
    out = subprocess.run([sys.executable, "-m", "sddsf", "no-such-command"],
                         capture_output=True, text=True, check=False)
    assert out.returncode != 0
    assert "No such command" in out.stderr
    assert "Traceback" not in out.stderr
