"""The contract every fuzz target keeps, and how crashes are told apart.

A target gets untrusted bytes. It may refuse them only with a typed
:class:`~sddsf.errors.SddsfError` whose ``code`` is a :class:`~sddsf.errors.Code`;
anything else escaping it (``IndexError``, ``KeyError``, ``TypeError``,
``RecursionError``, ``MemoryError``, an oracle's ``AssertionError``) is a crash.
Hangs and memory blow-ups are caught by libFuzzer (``-timeout``, ``-rss_limit_mb``).
"""

from __future__ import annotations

import hashlib
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from sddsf.errors import Code, SddsfError

__all__ = ["attempt", "crash_signature", "input_name", "within_contract"]

P = ParamSpec("P")
T = TypeVar("T")
_ROOT = Path(__file__).resolve().parent.parent


def within_contract(run: Callable[[bytes], object], data: bytes) -> Code | None:
    """Run one input through a target.

    Returns:
        The code of the typed rejection, or None when the input was accepted.

    Raises:
        Whatever the target raised that is not a typed :class:`SddsfError` (a crash).
    """
    try:
        run(data)
    except SddsfError as exc:
        if not isinstance(exc.code, Code):
            raise AssertionError(f"{type(exc).__name__} without a stable Code") from exc
        return exc.code
    return None


def attempt(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
    """Call one step of a target; a typed rejection gives None so the next steps
    still run on the same input (more coverage per execution). Untyped errors pass."""
    try:
        return fn(*args, **kwargs)
    except SddsfError:
        return None


def crash_signature(exc: BaseException) -> str:
    """``Type@file:line`` of the innermost SDDSF frame: one signature per distinct bug."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/sddsf/" in f.filename] or list(frames)
    if not ours:
        return type(exc).__name__
    last = ours[-1]
    path = Path(last.filename)
    where = path.relative_to(_ROOT) if path.is_relative_to(_ROOT) else path.name
    return f"{type(exc).__name__}@{where}:{last.lineno}"


def input_name(data: bytes) -> str:
    """The file name an input is stored under (content-addressed, like libFuzzer's)."""
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()
