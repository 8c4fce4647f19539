"""THREATS #10, property form: a relay that serves a device the log in ANY other
order is refused, and nothing is applied.

Hypothesis draws a non-identity permutation of a real space log and how the
relay dresses it up: offsets kept (the page is out of order), renumbered under
the genuine signed head (the leaves no longer give its root), or renumbered
under a freshly signed head (the relay holds its key; the author's hash chain
is then out of order). The device must refuse each one with ``proof_invalid``
and keep its state (convergence once the relay is honest again is checked by
test_convergence.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pycrdt
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from relaykit import Clock, make_app

from sddsf.client.device import Device
from sddsf.errors import Code, ProofError
from sddsf.relay.storage.base import RelayStorage
from sddsf.testing.malicious_relay import Attack, AttackTools, LogEntry, MaliciousRelay, Served


@dataclass(frozen=True)
class Permute(Attack):
    """Serve the log in ``order`` (a permutation of its offsets)."""

    mode: ClassVar[str] = "permute"
    order: tuple[int, ...]
    renumber: bool = False
    resign: bool = False

    def serve(self, log: list[LogEntry], tools: AttackTools) -> Served:
        view = [log[i] for i in self.order]
        if self.renumber or self.resign:
            view = [replace(e, offset=i) for i, e in enumerate(view)]
        return Served(view, tools.sign(view) if self.resign else tools.head.raw)


@dataclass
class Setup:
    harness: MaliciousRelay
    laptop: Device
    phone: Device
    space: bytes
    size: int


@pytest.fixture
async def setup(sqlite_storage: RelayStorage, tmp_path: Path) -> AsyncIterator[Setup]:
    """A laptop that wrote a few ops, and a phone that has pulled nothing yet."""
    # The relay's clock stands still, so its token buckets never refill: lift the
    # limits (30 examples x one sync each; rate limits have their own tests).
    harness = MaliciousRelay(httpx.ASGITransport(app=make_app(
        sqlite_storage, Clock(time.time_ns() // 1_000_000), rate_device_burst=1e6,
        rate_account_burst=1e6, rate_ip_burst=1e6)))
    laptop, _ = await Device.create_account(tmp_path / "laptop", "http://relay.test",
                                            "laptop", passphrase=None,
                                            insecure_plaintext=True, transport=harness)
    space = await laptop.create_space("notes")
    await laptop.sync()
    phone = await Device.add_local(laptop, tmp_path / "phone", "phone", passphrase=None,
                                   insecure_plaintext=True, transport=harness)
    for i in range(5):
        laptop.doc(space, "kv").get("kv", type=pycrdt.Map)[f"k{i}"] = i
        await laptop.sync()
    size = len(await harness.log(space))
    yield Setup(harness, laptop, phone, space, size)
    await laptop.close()
    await phone.close()


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_any_permuted_log_is_refused(setup: Setup, data: Any) -> None:
    order = tuple(data.draw(st.permutations(range(setup.size)), label="order"))
    assume(order != tuple(range(setup.size)))
    dress = data.draw(st.sampled_from(["offsets kept", "renumbered", "re-signed"]))
    setup.harness.set_attack(Permute(order, renumber=dress == "renumbered",
                                     resign=dress == "re-signed"),
                             victims={setup.phone.device_id}, spaces={setup.space})
    try:
        with pytest.raises(ProofError) as info:
            await setup.phone.sync()
        assert info.value.code is Code.PROOF_INVALID, info.value
        assert setup.phone.verified_size(setup.space) == 0
        assert setup.phone.store.scan("leaf", setup.space) == []
    finally:
        setup.harness.honest()

