"""SDDSF: Secure Distributed Data Synchronization Framework.

One person's devices share data and secret keys with end-to-end encryption,
offline-first CRDT merging, and a relay trusted for nothing but availability.

Start with :mod:`sddsf.protocol` (the pure protocol core) and
:mod:`sddsf.errors` (the exception tree and its stable codes).
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
