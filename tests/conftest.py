"""Shared test configuration.

Hypothesis profiles: ``ci`` (set when CI is set), ``dev`` (default) and
``long`` (``HYPOTHESIS_PROFILE=long`` for a deeper local run).
"""

from __future__ import annotations

import os
import signal

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile("long", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# CLI processes the tests start get Ctrl-C (SIGINT) as they would at a terminal.
# A test run started as a background job of a non-interactive shell inherits
# SIGINT ignored, and so would every process it starts (exec keeps an ignored
# signal ignored): then a SIGINT a test sends before the command installs its
# own handler would be lost.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# Under pytest-xdist (the README's test command runs two workers), tests that
# run libp2p nodes on loopback share one worker, one after another: their mDNS
# announcements reach every process on the machine, so two such tests at once
# would see (and refuse) each other's peers and measure each other's load.
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "p2p" in item.path.name or item.path.parent.name == "p2p":
            item.add_marker(pytest.mark.xdist_group("p2p"))
