"""Command-line values checked at the boundary, before anything is created.

Python hands a program its arguments as ``str`` with every byte that is not
UTF-8 smuggled in as a lone surrogate (PEP 383). Such a string cannot be
stored, synced or shown; it used to fail half-way through a command (after a
space was created, say). Every text parameter of the CLI is therefore
:data:`TEXT` (valid UTF-8), and a name that another device will show is
:data:`NAME` (valid UTF-8, no control characters, not empty, bounded).
:func:`guard_text_params` makes every plain string parameter of a command tree
:data:`TEXT`, so a command added later cannot forget it.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Final

import click

from sddsf.cli.output import clean
from sddsf.errors import UsageError

__all__ = ["MAX_NAME", "NAME", "TEXT", "NameParam", "TextParam", "check_text",
           "guard_text_params"]

# Zero-width (non-)joiners build emoji and some scripts' words: allowed in names.
_JOINERS: Final = frozenset("\u200c\u200d")

#: The longest name (space, key, device) the CLI accepts, in characters.
MAX_NAME: Final = 200


def check_text(value: str, what: str) -> str:
    """``value`` if it is valid UTF-8 text.

    Raises:
        UsageError: it holds bytes that are not UTF-8 (lone surrogates).
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        shown = value.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        raise UsageError(f"{what} is not valid UTF-8 text ({clean(shown)}); give text "
                         "in UTF-8") from None
    return value


class TextParam(click.ParamType):  # type: ignore[type-arg] # generic from click 8.2 only
    """Any text that is valid UTF-8."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        return check_text(str(value), _label(param))


class NameParam(TextParam):
    """A name shown on every device: UTF-8, no control characters, 1..MAX_NAME."""

    name = "name"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        text = super().convert(value, param, ctx)
        what = _label(param)
        if not text.strip():
            raise UsageError(f"{what} must not be empty")
        if len(text) > MAX_NAME:
            raise UsageError(f"{what} is longer than {MAX_NAME} characters")
        bad = [ch for ch in text if ch not in _JOINERS
               and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")]
        if bad:
            raise UsageError(f"{what} {clean(text)!r} holds a control character "
                             f"({clean(bad[0])}); use printable text")
        return text


TEXT: Final = TextParam()
NAME: Final = NameParam()


def _label(param: click.Parameter | None) -> str:
    if param is None:
        return "the value"
    if isinstance(param, click.Argument):
        return str(param.human_readable_name)
    return f"--{(param.name or 'value').replace('_', '-')}"


def guard_text_params(command: click.Command) -> None:
    """Make every plain string parameter of ``command`` and its subcommands
    :data:`TEXT` (paths, choices and names keep their own types)."""
    for param in command.params:
        if type(param.type) is click.types.StringParamType:
            param.type = TEXT
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            guard_text_params(sub)
