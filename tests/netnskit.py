"""Network namespaces for the peer-to-peer tests: skip, or fail under CI.

:func:`require_netns` skips a test when this machine cannot make network
namespaces (not root, no iproute2, or the kernel refuses), or fails it when
``SDDSF_REQUIRE_NETNS=1`` (CI sets it, so a machine that cannot run them cannot
pass silently). :func:`net_lab` is the usual way in: require, then a
:class:`~sddsf.testing.netns.NetLab` that is always closed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from sddsf.testing.netns import NetLab, netns_available


def require_netns() -> None:
    """Return if network namespaces work here, else skip (or fail under
    SDDSF_REQUIRE_NETNS=1)."""
    reason = netns_available()
    if reason is None:
        return
    reason = f"cannot make network namespaces here: {reason} (the peer-to-peer tests need them)"
    if os.environ.get("SDDSF_REQUIRE_NETNS") == "1":
        pytest.fail(reason + " (SDDSF_REQUIRE_NETNS=1)")
    pytest.skip(reason)


@contextlib.contextmanager
def net_lab(n: int, prefix: str = "sddsft") -> Iterator[NetLab]:
    """``n`` namespaces on one bridge, deleted afterwards (skips as :func:`require_netns`).

    The default prefix differs from the library's so that what a test leaves
    behind, if anything, is told apart from other labs on the machine."""
    require_netns()
    with NetLab(n, prefix) as lab:
        yield lab
