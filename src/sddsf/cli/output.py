"""How the CLI prints: data is text, never markup, never a terminal control.

The rule, for every command: a value that comes from data (a space, key or
value, a device or vault item name, a message from the relay or from another
device) reaches the terminal only through this module.

* :func:`say` prints one line made of parts. A part is literal text; a part
  ``(style, text)`` is literal text in a rich style (``"bold"``, ``"red"``...).
  No part is ever parsed as rich markup or emoji codes, so ``[/]`` or
  ``[bold]x`` in a name prints as those characters.
* Control characters in any part (ESC, CR, newline, bidi overrides...) are
  shown escaped (``\\x1b``, ``\\n``, ``\\u202e``), so a name from another device
  can neither move the cursor, recolour the screen nor forge an extra line.
* :func:`emit` prints ``--json`` output (JSON escapes every control character)
  or calls the text renderer with an :class:`Out`.
* Lines are never wrapped (``soft_wrap``), so output piped to a script is the
  line that was printed.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import click
from rich.console import Console
from rich.text import Text

__all__ = ["JSON_HELP", "Out", "Part", "clean", "console", "emit", "iso_time", "json_ready",
           "say"]

#: The help text of every ``--json`` option.
JSON_HELP: Final = ("Print the result as JSON (ids in full hex, times in ISO 8601 UTC; "
                    "the schema of each command is in docs/client.md).")

#: One piece of a printed line: literal text, or ``(style, literal text)``.
Part = str | tuple[str, object]

# Invisible characters that reorder or hide text (Trojan Source) besides the
# control characters (category Cc): they are escaped too.
_BIDI: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                         "\u2066\u2067\u2068\u2069\u2028\u2029")

_SHORT: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Zero-width (non-)joiners build emoji and some scripts' words: kept.
_JOINERS: Final = frozenset("\u200c\u200d")


def clean(value: object) -> str:
    """``value`` as one line of inert text: control and bidi characters escaped.

    Examples: ``"a\\x1b[2Jb"`` becomes ``"a\\\\x1b[2Jb"``; markup such as ``"[/]"``
    is unchanged (it is printed as text, see :func:`say`).
    """
    text = str(value)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in _BIDI or (ch not in _JOINERS and unicodedata.category(ch) in (
                "Cc", "Cf", "Cs", "Zl", "Zp")):
            code = ord(ch)
            out.append(_SHORT.get(ch) or (f"\\x{code:02x}" if code < 0x100
                                          else f"\\u{code:04x}"))
        else:
            out.append(ch)
    return "".join(out)


def console(*, stderr: bool = False) -> Console:
    """A rich console that never interprets markup, emoji codes or highlights."""
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False)


def _text(parts: tuple[Part, ...]) -> Text:
    line = Text()
    for part in parts:
        if isinstance(part, tuple):
            style, value = part
            line.append(clean(value), style=style)
        else:
            line.append(clean(part))
    return line


class Out:
    """Prints lines of inert text (see the module docstring)."""

    def __init__(self, *, stderr: bool = False) -> None:
        self.console = console(stderr=stderr)

    def line(self, *parts: Part) -> None:
        """Print one line made of ``parts`` (each literal text)."""
        self.console.print(_text(parts), soft_wrap=True)

    def blank(self) -> None:
        """Print an empty line."""
        self.console.print(soft_wrap=True)


def say(*parts: Part, err: bool = False) -> None:
    """Print one line of inert text to stdout (or stderr with ``err``)."""
    Out(stderr=err).line(*parts)


#: A ``*_ms`` integer at least this large is a time since the epoch (after
#: 2001-09-09), not a duration.
_EPOCH_MS_MIN: Final = 10**12


def json_ready(data: Any) -> Any:
    """``data`` with the CLI's one time format: every ``<name>_ms`` field holding a
    time since the epoch becomes ``<name>_at`` in ISO 8601 UTC (``ts_ms``
    becomes ``at``). Durations (smaller integers) are left alone."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(key, str) and key.endswith("_ms") and isinstance(value, int) \
                    and not isinstance(value, bool) and value >= _EPOCH_MS_MIN:
                out["at" if key == "ts_ms" else key[:-3] + "_at"] = iso_time(value)
            else:
                out[key] = json_ready(value)
        return out
    if isinstance(data, list | tuple):
        return [json_ready(v) for v in data]
    return data


def emit(data: Any, as_json: bool, render: Callable[[Out], None]) -> None:
    """Print ``data`` as JSON (``--json``; times made ISO 8601 UTC by
    :func:`json_ready`), or call ``render`` for the text form."""
    if as_json:
        click.echo(json.dumps(json_ready(data), indent=2, sort_keys=True))
    else:
        render(Out())


def iso_time(ms: int | None) -> str | None:
    """A time in milliseconds since the epoch as ISO 8601 UTC (``2026-01-05T09:30:00Z``);
    the one time format of the CLI's output."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
