"""Registry fill: a stolen device floods the registry to lock the owner out.

With the old rules an account held at most 1,024 devices *ever* (revoked ones
counted), anything an active device signed was accepted as fast as it could
send it, and a device countersigns its own additions. A thief holding one
unlocked device appended 1,022 dummy add entries in about 12 s; the account
then held 1,024 devices and ``recover`` with the account secret failed forever
(``registry_invalid ... limit``).

What must hold now:

* device additions are bounded per time window by the shared rules (entry
  timestamps bounded by the relay's clock, so they cannot be back-dated) and
  rate limited per account by the relay, so a mass add stops early;
* the owner is told: the controller raises an alert on a burst of additions;
* the account key can always recover, whatever a device did: the device cap
  counts *active* devices and keeps a slot that only the account key can use,
  even after a thief spent weeks filling the account within the window.

Run in process (real relay app over SQLite) and against real ``sddsf relay
serve`` processes on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from clientkit import InProcessRelay, passphrase
from livekit import Relays, fresh_postgres_database, write_key_file
from relaykit import Clock, make_app

from sddsf.client.device import Device
from sddsf.crypto import random_bytes
from sddsf.errors import AuthorizationError, Code, SddsfError
from sddsf.protocol import registry as reg
from sddsf.protocol.identity import DeviceKeys
from sddsf.relay.storage.base import RelayStorage

ATTEMPTS = 1_022  # what fills a 1,024-device account after genesis and the thief
#: Additions a thief may get in before it is stopped (the rule's window allows
#: a handful; anything near ATTEMPTS is the attack succeeding).
STOPPED_WITHIN = 64
ADD_ALERTS = {"pairing_burst", "device_add_burst"}


def _new_keys() -> DeviceKeys:
    return DeviceKeys.from_seeds(random_bytes(32), random_bytes(32))


async def mass_add(thief: Device, attempts: int, clock: Callable[[], int]
                   ) -> tuple[int, SddsfError | None]:
    """Append up to ``attempts`` add entries signed by ``thief`` (each dummy device
    countersigns its own); returns how many were accepted and the first refusal."""
    state = await thief.refresh_registry()
    for i in range(attempts):
        entry = reg.add_device(state, thief.keys, _new_keys(), f"dummy {i}", clock())
        try:
            await thief.relay.append_registry(thief.account.account_id, entry)
        except SddsfError as exc:
            return i, exc
        state = state.apply(entry)
    return attempts, None


async def check_owner_wins(owner: Device, thief: Device, secret: bytes, home: Path,
                           accepted: int, refusal: SddsfError | None, *,
                           transport: httpx.AsyncBaseTransport | None,
                           clock: Callable[[], int]) -> Device:
    assert refusal is not None and accepted <= STOPPED_WITHIN, (
        f"the thief added {accepted} devices before being stopped ({refusal})")
    assert refusal.code in (Code.REGISTRY_INVALID, Code.RATE_LIMITED), refusal
    alerts = await owner.relay.alerts(include_acked=True)
    assert {a.rule for a in alerts} & ADD_ALERTS, alerts
    return await recover_and_evict(thief, secret, home, transport=transport, clock=clock)


async def recover_and_evict(thief: Device, secret: bytes, home: Path, *,
                            transport: httpx.AsyncBaseTransport | None,
                            clock: Callable[[], int]) -> Device:
    recovered = await Device.recover(home, thief.relay_url, secret, "recovered",
                                     passphrase=passphrase, transport=transport, clock=clock)
    assert recovered.registry().is_active(recovered.device_id)
    await recovered.revoke(thief.device_id, "stolen", signer=_account(secret))
    with pytest.raises(AuthorizationError):
        await thief.sync()
    return recovered


def _account(secret: bytes):  # type: ignore[no-untyped-def]
    from sddsf.protocol.identity import AccountKeys
    return AccountKeys.from_secret(secret)


# ------------------------------------------------------------- in process


#: The thief sends from many addresses (the per-address bucket does not bind it);
#: the per-account and per-device limits stay at their defaults.
MANY_ADDRESSES = {"rate_ip_per_s": 1e9, "rate_ip_burst": 1e9}


class ManyAddressRelay(InProcessRelay):
    def __init__(self, storage: RelayStorage, clock: Clock) -> None:
        super().__init__(storage, clock)
        self.app = make_app(storage, clock, **MANY_ADDRESSES)


@pytest.fixture
def relay(sqlite_storage: RelayStorage) -> InProcessRelay:
    return ManyAddressRelay(sqlite_storage, Clock(time.time_ns() // 1_000_000))


async def test_mass_add_is_stopped_alerted_and_the_account_recovers(
        relay: InProcessRelay, tmp_path: Path) -> None:
    owner, secret = await relay.new_account(tmp_path / "laptop")
    await owner.create_space("notes")
    thief = await relay.add(owner, tmp_path / "phone", "phone")
    await thief.sync()
    accepted, refusal = await mass_add(thief, ATTEMPTS, relay.clock)
    recovered = await check_owner_wins(owner, thief, secret, tmp_path / "recovered",
                                       accepted, refusal, transport=relay.transport(),
                                       clock=relay.clock)
    for d in (owner, thief, recovered):
        await d.close()


async def test_account_recovers_after_a_thief_filled_the_active_cap_slowly(
        relay: InProcessRelay, tmp_path: Path) -> None:
    # A patient thief stays within every window (the relay's clock moves on a
    # day between bursts) until no device may add another: the account key
    # still can. Revoked devices do not count against the cap.
    owner, secret = await relay.new_account(tmp_path / "laptop")
    await owner.create_space("notes")
    thief = await relay.add(owner, tmp_path / "phone", "phone")
    await thief.sync()
    total = 0
    refusal: SddsfError | None = None
    for _ in range(ATTEMPTS):
        accepted, refusal = await mass_add(thief, ATTEMPTS - total, relay.clock)
        total += accepted
        if refusal is None or accepted == 0:
            break
        relay.clock.now += 25 * 3600 * 1000
    state = await owner.refresh_registry()
    assert refusal is not None and "active" in refusal.message, refusal
    assert len(state.active_devices()) == state.limits.max_devices - 1
    recovered = await recover_and_evict(thief, secret, tmp_path / "recovered",
                                        transport=relay.transport(), clock=relay.clock)
    assert len(recovered.registry().active_devices()) == state.limits.max_devices - 1
    for d in (owner, thief, recovered):
        await d.close()


# --------------------------------------------------- real relay processes


@pytest.fixture(params=["sqlite", "postgresql"])
async def relay_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    relays = Relays(tmp_path)
    env = {"SDDSF_RELAY_KEY_FILE": str(write_key_file(tmp_path / "relay.key")),
           **{f"SDDSF_RELAY_{k.upper()}": "1000000000" for k in MANY_ADDRESSES}}
    try:
        if request.param == "sqlite":
            yield relays.start("--db", f"sqlite:///{tmp_path / 'relay.db'}", env=env).base_url
        else:
            async with fresh_postgres_database() as dsn:
                yield relays.start("--db", dsn, env=env).base_url
    finally:
        relays.stop_all()


def _now() -> int:
    return time.time_ns() // 1_000_000


async def test_mass_add_against_a_real_relay_process(relay_url: str, tmp_path: Path) -> None:
    owner, secret = await Device.create_account(tmp_path / "laptop", relay_url, "laptop",
                                                passphrase=None, insecure_plaintext=True)
    await owner.create_space("notes")
    thief = await Device.add_local(owner, tmp_path / "phone", "phone", passphrase=None,
                                   insecure_plaintext=True)
    await thief.sync()
    accepted, refusal = await mass_add(thief, ATTEMPTS, _now)
    recovered = await check_owner_wins(owner, thief, secret, tmp_path / "recovered",
                                       accepted, refusal, transport=None, clock=_now)
    for d in (owner, thief, recovered):
        await d.close()
