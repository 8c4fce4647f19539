"""README's Python example runs, and the CLI's demo and error path behave."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from sddsf.cli import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_has_exactly_two_setup_commands() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 2
    assert "sddsf demo" in blocks[0]
    assert "pytest" in blocks[1]


def test_readme_python_example_runs() -> None:
    # The protocol core's example; the library's runs against a relay
    # (tests/client/test_examples.py).
    code = [c for c in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
            if "AccountKeys" in c]
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
    assert "Bob brings snacks" in out  # the second person's edit reached the owner
    assert "removed: the note moved to key epoch" in out and "never sees 'PRIVATE'" in out
    assert "every protection held" in out


def test_console_entry_point_reports_usage_errors_in_one_line() -> None:
    out = subprocess.run([sys.executable, "-m", "sddsf", "no-such-command"],
                         capture_output=True, text=True, check=False)
    assert out.returncode != 0
    assert "No such command" in out.stderr
    assert "Traceback" not in out.stderr


def _readme_commands() -> list[list[str]]:
    """Every `sddsf ...` command line of the README: lines of its code blocks and
    inline code spans (comments dropped, shell-split)."""
    import shlex

    text = README.read_text()
    found: list[str] = []
    for block in re.findall(r"```(?:text|sh)\n(.*?)```", text, re.S):
        for line in block.splitlines():
            for part in line.split("&&"):
                command = part.split(" #", 1)[0].strip()
                command = re.sub(r"^\.venv/bin/", "", command)
                if command.startswith("sddsf "):
                    found.append(command)
    found += [span for span in re.findall(r"`(sddsf [^`]+)`", text)]
    return [shlex.split(c.replace("...", "")) for c in found]


def test_every_command_the_readme_names_exists_with_its_options() -> None:
    commands = _readme_commands()
    assert len(commands) >= 20, commands
    for argv in commands:
        command: click.Command = cli
        words = argv[1:]
        while words and words[0].startswith("--"):  # global options: --home DIR
            assert words[0] in ("--home", "--version", "--help"), argv
            words = words[2:] if words[0] == "--home" else words[1:]
        while isinstance(command, click.Group) and words and not words[0].startswith("-"):
            sub = command.commands.get(words[0])
            assert sub is not None, f"README names `{' '.join(argv)}`: no command {words[0]!r}"
            command, words = sub, words[1:]
        assert not isinstance(command, click.Group) or not words, argv
        known = {opt for p in command.params for opt in getattr(p, "opts", [])}
        for word in words:
            if word.startswith("--"):
                assert word.split("=", 1)[0] in known, f"README: {' '.join(argv)}: {word}?"


def test_every_json_option_has_help_and_every_text_parameter_is_checked() -> None:
    from sddsf.cli.params import TEXT

    stack: list[click.Command] = [cli]
    seen = 0
    while stack:
        command = stack.pop()
        for param in command.params:
            if isinstance(param, click.Option) and "--json" in param.opts:
                seen += 1
                assert param.help, f"{command.name} --json has no help"
            assert type(param.type) is not click.types.StringParamType, (
                f"{command.name} {param.name}: a plain string is not checked to be UTF-8")
        if isinstance(command, click.Group):
            stack.extend(command.commands.values())
    assert seen >= 15
    assert TEXT.name == "text"


def test_the_client_guide_documents_sync_and_peers() -> None:
    """docs/client.md names every option of ``sync`` and ``peers``, and its ``--json``
    table every event that ``sync --watch`` prints."""
    import inspect

    from sddsf.cli import device_cmds, peer_cmds

    guide = (README.parent / "docs" / "client.md").read_text()
    for name in ("sync", "peers"):
        for param in cli.commands[name].params:
            for opt in getattr(param, "opts", []):
                assert opt in guide or opt == "--help", f"docs/client.md: {name} {opt}?"
    row = next(line for line in guide.splitlines() if line.startswith("| `sync --watch` |"))
    kinds = set()
    for module in (device_cmds, peer_cmds):  # view.event("kind", ...), say("kind", ...)
        kinds |= set(re.findall(r'\b(?:event|say)\(\s*"([a-z_]+)"', inspect.getsource(module)))
    assert {"online", "synced", "peers", "stopped"} <= kinds, kinds
    for kind in kinds:
        assert f"`{kind}`" in row, f"docs/client.md: the sync --watch event {kind!r}?"
