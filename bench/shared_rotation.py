"""Shared spaces: what one key rotation costs at N member accounts x D devices
(docs/performance.md, "Shared spaces: rotation at 100 members x 3 devices").

A shared space's epoch key goes out in a version 3 key package sealed for every
active device of every member account plus each member's recovery key
(docs/protocol.md 10.8). This builds N accounts with D devices each (real
registries: genesis, then D - 1 additions signed by the account key) and a
membership of all N (account 0 creates it and adds the others), then measures,
median / min / max over ``--repeat`` runs:

* ``fold``: a client folding the membership log (N entries);
* ``build``: one version 3 package for N x D devices + N recovery keys, epoch 1,
  wrapping the epoch-0 key (one seal per recipient);
* ``verify``: ``verify_key_package_v3`` (what every device and the relay do per
  rotation), and its ``decode`` alone;
* ``open``: one device opening its epoch key and the wrapped previous key;
* ``removal``: account N-1 removed (the entry signed and applied),
  ``rotation_due_v3`` reports it, and the next package (epoch 2, wrapping epoch
  1's key, for the N - 1 who remain) is built and verified.

Then the relay (``--no-relay`` skips it): the relay application in this process
(httpx over ASGI, no sockets) on a temporary SQLite database, the N accounts
created on it, the space created by account 0 with a one-account package, the
membership appended through ``POST /v1/spaces/{id}/members`` and the shared
package through ``POST /v1/spaces/{id}/keys``. Every device here shares one
address, so the benchmark raises the per-address, per-device and per-account
rate limits (``rate_ip_*``, ``rate_device_*``, ``rate_account_*``) far above
their defaults. Each repeat removes one more member (N, N - 1, ... remain) and
times, at the relay, the removal entry and the next package end to end, with
the relay's time split into its registry reads, the membership fold, the
package check and the rest; and, at one member's device, what it does to take
the new epoch as the client engine does it: the membership log, every member's
registry (one request each), the key packages, verify and open.

Before the removals, a member's device opens a session and reads every
member's registry at a relay with the default per-address limit (20/s, burst
100), counting the reads it refuses.

Usage:
    python bench/shared_rotation.py [--members 100] [--devices 3] [--repeat 5]
        [--json] [--no-relay]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import inspect
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "relay"))
sys.path.insert(0, str(ROOT / "src"))

import httpx
from relaykit import T0, Clock, make_app

from sddsf.client.relay_client import RelayClient
from sddsf.client.retry import RetryPolicy
from sddsf.crypto import validate_x25519_public
from sddsf.errors import RateLimitedError
from sddsf.protocol import keypackage as kp
from sddsf.protocol import membership as ms
from sddsf.protocol.identity import AccountKeys, DeviceKeys
from sddsf.protocol.keypackage_v3 import (
    build_key_package_v3,
    rotation_due_v3,
    verify_key_package_v3,
)
from sddsf.protocol.membership import MembershipState, Role
from sddsf.protocol.registry import RegistryState, add_device, genesis, verify_registry
from sddsf.relay.routes import spaces as spaces_mod
from sddsf.relay.storage.sqlite import SqliteStorage

ZERO = bytes(32)
#: Far above anything this run sends (the defaults are per address / device / account).
UNLIMITED = 1e9


def _seed(*parts: object) -> bytes:
    return hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=32).digest()


# ------------------------------------------------------------------ the world


@dataclass
class World:
    """N accounts x D devices, their registries and the space's membership."""

    accounts: list[AccountKeys]
    devices: list[list[DeviceKeys]]
    entries: list[list[bytes]]  # registry entries per account
    regs: dict[bytes, RegistryState]
    space: bytes
    log: list[bytes] = field(default_factory=list)  # membership entries
    state: MembershipState | None = None
    sets: dict[bytes, frozenset[bytes]] = field(default_factory=dict)
    epoch_keys: list[bytes] = field(default_factory=list)
    packages: list[bytes] = field(default_factory=list)

    @property
    def owner(self) -> DeviceKeys:
        return self.devices[0][0]

    @property
    def owner_reg(self) -> RegistryState:
        return self.regs[self.accounts[0].account_id]

    def apply(self, entry: bytes) -> bytes:
        """Apply a membership entry here (as the admin's device does)."""
        state = self.state or MembershipState.empty(self.space)
        self.state = state.apply(entry, self.regs.get)
        self.sets[self.state.head] = frozenset(self.state.members)
        self.log.append(entry)
        return entry

    def members_at(self, head: bytes) -> frozenset[bytes] | None:
        return self.sets.get(head)

    def next_package(self) -> bytes:
        """The next epoch's version 3 package for the current members (recorded)."""
        assert self.state is not None
        epoch = len(self.packages)
        key = os.urandom(32)
        pkg = build_key_package_v3(
            creator=self.owner, creator_account=self.accounts[0].account_id,
            registries=self.regs, members=self.state.members,
            membership_head=self.state.head, space=self.space, epoch=epoch,
            prev=kp.package_hash(self.packages[-1]), epoch_key=key, ts_ms=T0,
            previous_keys=self.epoch_keys[-1:])
        self.packages.append(pkg)
        self.epoch_keys.append(key)
        return pkg


def make_world(members: int, devices: int) -> World:
    accounts = [AccountKeys.from_secret(_seed("account", i)) for i in range(members)]
    devs = [[DeviceKeys.from_seeds(_seed("sign", i, j), _seed("kx", i, j))
             for j in range(devices)] for i in range(members)]
    entries: list[list[bytes]] = []
    regs: dict[bytes, RegistryState] = {}
    for acct, own in zip(accounts, devs, strict=True):
        chain = [genesis(acct, own[0], "d0", T0)]
        state = verify_registry(chain, pinned=acct.public)
        for j, dev in enumerate(own[1:], start=1):
            # Signed by the account key: the relay limits device-signed additions only.
            chain.append(add_device(state, acct, dev, f"d{j}", T0 + j))
            state = state.apply(chain[-1])
        entries.append(chain)
        regs[acct.account_id] = state
    world = World(accounts, devs, entries, regs, _seed("space")[:16])
    key0 = os.urandom(32)
    world.packages.append(kp.build_key_package(
        creator=world.owner, registry=world.owner_reg, space=world.space, epoch=0, prev=ZERO,
        epoch_key=key0, ts_ms=T0))
    world.epoch_keys.append(key0)
    world.apply(ms.create(world.space, world.owner, world.owner_reg, T0))
    for acct in accounts[1:]:
        world.apply(ms.add_member(world.state, world.owner, world.owner_reg,  # type: ignore[arg-type]
                                  acct.public, Role.WRITER, T0))
    return world


# ------------------------------------------------------------------ statistics


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


# ------------------------------------------------------------------ protocol core


def protocol_run(members: int, devices: int) -> dict[str, Any]:
    """One run of the protocol-core measurements on a fresh world (seconds)."""
    world = make_world(members, devices)
    assert world.state is not None
    aid = [a.account_id for a in world.accounts]
    out: dict[str, Any] = {}
    out["fold_s"], folded = timed(lambda: ms.fold(world.space, world.log, world.regs.get))
    assert folded.state.head == world.state.head and not folded.refused
    pkg0 = kp.decode_key_package(world.packages[0])
    out["build_s"], raw1 = timed(world.next_package)
    out["decode_s"], _ = timed(lambda: kp.decode_key_package(raw1))
    out["verify_s"], pkg1 = timed(lambda: verify_key_package_v3(
        raw1, space=world.space, previous=pkg0, registries=world.regs,
        members_at=world.members_at))
    # Validating each recipient's X25519 key is one scalar multiplication of the
    # three a seal costs (the ephemeral key pair and the shared secret are the others).
    targets = [r.public.kx_key for reg in world.regs.values() for r in reg.active_devices()]
    out["validate_keys_s"], _ = timed(lambda: [validate_x25519_public(k) for k in targets])
    reader = world.devices[-1][-1]

    def open_keys() -> dict[int, bytes]:
        key = kp.open_epoch_key(pkg1, reader.device_id, reader.kx)
        return {1: key, **kp.unwrap_previous_keys(pkg1, key)}

    out["open_s"], keys = timed(open_keys)
    assert keys == {0: world.epoch_keys[0], 1: world.epoch_keys[1]}
    out["recipients"], out["bytes"] = len(pkg1.recipients), len(raw1)

    # Removal: the admin signs and applies the entry, sees the rotation is due,
    # builds the next epoch; every remaining device (and the relay) verifies it.
    gone = aid[-1]
    out["remove_entry_s"], _ = timed(functools.partial(admin_removes, world, gone))
    out["due_s"], due = timed(lambda: rotation_due_v3(pkg1, world.regs,
                                                      world.state.members))  # type: ignore[union-attr]
    assert due and due.removed == (gone,) and not due.added
    out["removal_build_s"], raw2 = timed(world.next_package)
    out["removal_verify_s"], pkg2 = timed(lambda: verify_key_package_v3(
        raw2, space=world.space, previous=pkg1, registries=world.regs,
        members_at=world.members_at))
    assert gone not in pkg2.recipients and reader.device_id not in pkg2.recipients
    stay = world.devices[1][0]
    out["removal_open_s"], key2 = timed(lambda: kp.open_epoch_key(pkg2, stay.device_id,
                                                                  stay.kx))
    assert key2 == world.epoch_keys[2]
    out["removal_recipients"], out["removal_bytes"] = len(pkg2.recipients), len(raw2)
    return out


# ------------------------------------------------------------------ relay


class Stages:
    """Exclusive time per stage of one request (nested stages are subtracted
    from their callers), and call counts."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._child = [0.0]

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def _done(self, label: str, started: float) -> None:
        spent = time.perf_counter() - started
        child = self._child.pop()
        self.seconds[label] += spent - child
        self.calls[label] += 1
        self._child[-1] += spent

    def wrap_async(self, label: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def inner(*args: Any, **kwargs: Any) -> Any:
            self._child.append(0.0)
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self._done(label, started)
        return inner

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(*args: Any, **kwargs: Any) -> Any:
            self._child.append(0.0)
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._done(label, started)
        return inner


def instrument(app: Any, storage: SqliteStorage) -> Stages:
    """Time the relay's storage calls, registry cache, membership fold and package check."""
    stages = Stages()
    fabric = app.state.relay.fabric
    # Every storage call, by name (registry_entries: the registry reads).
    for name in dir(type(storage)):
        method = getattr(storage, name)
        if not name.startswith("_") and inspect.iscoroutinefunction(method):
            setattr(storage, name, stages.wrap_async(f"SQLite {name}", method))
    # The shared-space code holds the registry cache's bound method: wrap both.
    fabric.registries.get = stages.wrap_async("registry cache", fabric.registries.get)
    fabric.shared._registry = stages.wrap_async("registry cache", fabric.shared._registry)
    fabric.shared.folded = stages.wrap_async("membership fold", fabric.shared.folded)
    spaces_mod.verify_key_package_v3 = stages.wrap(  # type: ignore[attr-defined]
        "package verify", verify_key_package_v3)
    return stages


def client(app: Any, world: World, i: int, j: int = 0, clock: Clock | None = None,
           retry: RetryPolicy | None = None) -> RelayClient:
    return RelayClient("http://relay.test", device=world.devices[i][j],
                       account_id=world.accounts[i].account_id,
                       transport=httpx.ASGITransport(app=app), clock=clock or Clock(),
                       retry=retry)


async def timed_async(stages: Stages, coro: Awaitable[Any]) -> tuple[float, dict[str, float],
                                                                      dict[str, int], Any]:
    stages.reset()
    started = time.perf_counter()
    out = await coro
    spent = time.perf_counter() - started
    return spent, dict(stages.seconds), dict(stages.calls), out


def _row(spent: float, seconds: dict[str, float], calls: dict[str, int]) -> dict[str, Any]:
    return {"total_s": spent, "stages_s": seconds, "calls": calls,
            "other_s": spent - sum(seconds.values())}


@dataclass
class Member:
    """A member's device as the client engine keeps it: its fold of the
    membership log (extended by new entries only) and the registry positions
    it verified."""

    c: RelayClient
    device: DeviceKeys
    world: World
    state: MembershipState
    known: dict[bytes, int]
    sets: dict[bytes, frozenset[bytes]] = field(default_factory=dict)
    last: int = -1
    key_bytes: int = 0  # the key packages it downloaded at its last refresh

    async def take_epoch(self) -> int:
        """What the keyring's refresh does for a new epoch: the membership log
        read ahead, every member's new registry entries (one request each), the
        key packages; then verify the newest package and open its keys.
        Returns the number of requests."""
        w = self.world
        log = await self.c.membership(w.space)
        for offset, entry in log.entries:
            if offset > self.last:
                self.state = self.state.apply(entry, w.regs.get)
                self.sets[self.state.head] = frozenset(self.state.members)
                self.last = offset
        for account in sorted(self.state.members):
            assert not await self.c.registry(account, self.known[account] + 1)
        raw = await self.c.key_packages(w.space, 0)  # the keyring asks from epoch 0
        self.key_bytes = sum(map(len, raw))
        pkg = verify_key_package_v3(raw[-1], space=w.space,
                                    previous=kp.decode_key_package(raw[-2]),
                                    registries=w.regs, members_at=self.sets.get)
        key = kp.open_epoch_key(pkg, self.device.device_id, self.device.kx)
        assert key == w.epoch_keys[-1]
        kp.unwrap_previous_keys(pkg, key)
        return 2 + len(self.state.members)


def admin_removes(world: World, member: bytes) -> bytes:
    """The admin's device signs the removal and applies it to its own fold."""
    assert world.state is not None
    return world.apply(ms.remove_member(world.state, world.owner, world.owner_reg, member, T0))


def admin_rotates(world: World, newest: kp.KeyPackage) -> bytes:
    """The admin's device after the removal: the rotation is due; the next package."""
    assert world.state is not None
    due = rotation_due_v3(newest, world.regs, world.state.members)
    assert due.removed, due
    return world.next_package()


async def relay_run(members: int, devices: int, repeat: int) -> dict[str, Any]:
    world = make_world(members, devices)
    log, world.log, world.state, world.sets = world.log, [], None, {}
    with tempfile.TemporaryDirectory() as tmp:
        storage = SqliteStorage(str(Path(tmp) / "relay.db"))
        await storage.open()
        clock = Clock()
        app = make_app(storage, clock, **{f"rate_{k}_{p}": UNLIMITED for k in
                                          ("ip", "device", "account")
                                          for p in ("per_s", "burst")})
        try:
            return await _relay_steps(app, storage, clock, world, log, repeat)
        finally:
            # instrument() wraps a module global of the relay: put it back.
            spaces_mod.verify_key_package_v3 = verify_key_package_v3  # type: ignore[attr-defined]
            app.state.relay.fabric.close()
            await app.state.relay.edge.close()
            await storage.close()


async def _relay_steps(app: Any, storage: SqliteStorage, clock: Clock, world: World,
                       log: list[bytes], repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = len(world.accounts)
    started = time.perf_counter()
    clients = [client(app, world, i, clock=clock) for i in range(n)]
    for i, c in enumerate(clients):
        await c.create_account(world.entries[i][0])
        for entry in world.entries[i][1:]:
            await c.append_registry(world.accounts[i].account_id, entry)
    owner = clients[0]
    await owner.create_space(world.space, world.packages[0])
    out["setup_accounts_s"] = time.perf_counter() - started
    stages = instrument(app, storage)

    appends = []
    for entry in log:
        spent, seconds, calls, res = await timed_async(
            stages, owner.append_membership(world.space, world.apply(entry)))
        assert res.status == "accepted", res
        appends.append(_row(spent, seconds, calls))
    out["membership_appends"] = {
        "entries": len(appends), "total_s": sum(a["total_s"] for a in appends),
        "first": appends[0], "last": appends[-1],
        "registry_reads_total": sum(a["calls"].get("SQLite registry_entries", 0)
                                    for a in appends)}

    spent, seconds, calls, _ = await timed_async(
        stages, owner.put_key_package(world.space, world.next_package()))
    out["share_put"] = _row(spent, seconds, calls)
    out["default_limit_probe"] = await _default_limit_probe(storage, world)
    reader = Member(clients[1], world.devices[1][0], world, MembershipState.empty(world.space),
                    {a: reg.seq for a, reg in world.regs.items()})
    await reader.take_epoch()  # its session open, its fold current

    removals = []
    for r in range(repeat):
        gone = world.accounts[n - 1 - r].account_id
        assert world.state is not None
        row: dict[str, Any] = {"members_after": n - 1 - r}
        sign_s, entry = timed(functools.partial(admin_removes, world, gone))
        spent, seconds, calls, _ = await timed_async(
            stages, owner.append_membership(world.space, entry))
        row["remove_post"] = _row(spent, seconds, calls)
        newest = kp.decode_key_package(world.packages[-1])
        row["client_build_s"], raw = timed(functools.partial(admin_rotates, world, newest))
        spent, seconds, calls, _ = await timed_async(
            stages, owner.put_key_package(world.space, raw))
        row["put"] = _row(spent, seconds, calls)
        row["recipients"], row["bytes"] = len(kp.decode_key_package(raw).recipients), len(raw)
        started = time.perf_counter()
        row["member_requests"] = await reader.take_epoch()
        row["member_take_s"] = time.perf_counter() - started
        row["member_key_bytes"] = reader.key_bytes
        row["relay_removal_s"] = row["remove_post"]["total_s"] + row["put"]["total_s"]
        row["admin_removal_s"] = sign_s + row["relay_removal_s"] + row["client_build_s"]
        removals.append(row)
    out["removals"] = removals
    for c in clients:
        await c.aclose()
    return out


async def _default_limit_probe(storage: SqliteStorage, world: World) -> dict[str, int]:
    """A member's device opening a session and reading every member's registry
    (one request each, as each sync of the space does) at a relay with the
    default per-address limit; the clock stands still, so the bucket does not
    refill during the run."""
    clock = Clock()
    app = make_app(storage, clock)
    c = client(app, world, 1, clock=clock, retry=RetryPolicy(attempts=1))
    assert world.state is not None
    accepted = refused = 0
    try:
        for account in sorted(world.state.members):
            try:
                await c.registry(account, 0)
                accepted += 1
            except RateLimitedError:
                refused += 1
    finally:
        await c.aclose()
        app.state.relay.fabric.close()
        await app.state.relay.edge.close()
    return {"reads": accepted + refused, "accepted": accepted, "refused": refused,
            "rate_ip_burst": int(app.state.relay.settings.rate_ip_burst)}


# ------------------------------------------------------------------ report


def report(members: int, devices: int, runs: list[dict[str, Any]],
           relay: dict[str, Any] | None) -> dict[str, Any]:
    first = runs[0]
    rec = first["recipients"]
    out: dict[str, Any] = {
        "members": members, "devices_per_member": devices,
        "recipients": rec, "seals": rec, "package_bytes": first["bytes"],
        "bytes_per_recipient": first["bytes"] / rec,
        "bytes_per_device": first["bytes"] / (members * devices),
        "bytes_to_all_devices": first["bytes"] * members * devices,
        "removal_recipients": first["removal_recipients"],
        "removal_package_bytes": first["removal_bytes"],
    }
    keys = [k for k in first if k.endswith("_s")]
    out["protocol_ms"] = {k[:-2]: summary([r[k] * 1e3 for r in runs]) for k in keys}
    out["protocol_ms"]["seal_per_recipient_us"] = summary(
        [r["build_s"] / r["recipients"] * 1e6 for r in runs])
    out["protocol_ms"]["validate_key_per_recipient_us"] = summary(
        [r["validate_keys_s"] / (members * devices) * 1e6 for r in runs])
    out["protocol_ms"]["admin_removal_cpu"] = summary(
        [(r["remove_entry_s"] + r["due_s"] + r["removal_build_s"]) * 1e3 for r in runs])
    out["protocol_ms"]["device_takes_removal_cpu"] = summary(
        [(r["removal_verify_s"] + r["removal_open_s"]) * 1e3 for r in runs])
    if relay is not None:
        out["relay"] = relay
    return out


def _ms(s: dict[str, float]) -> str:
    return f"{s['median']:9.2f} {s['min']:9.2f} {s['max']:9.2f}"


def print_table(rep: dict[str, Any]) -> None:
    print(f"{rep['members']} members x {rep['devices_per_member']} devices: "
          f"{rep['recipients']} recipients = seals, package {rep['package_bytes']:,} B "
          f"({rep['bytes_per_recipient']:.0f} B per recipient, "
          f"{rep['bytes_per_device']:.0f} B per device; "
          f"{rep['bytes_to_all_devices']:,} B to all devices)")
    print(f"after one removal: {rep['removal_recipients']} recipients, "
          f"{rep['removal_package_bytes']:,} B")
    print(f"{'protocol core (ms; µs where named)':40} {'median':>9} {'min':>9} {'max':>9}")
    for k, s in rep["protocol_ms"].items():
        print(f"{k:40} {_ms(s)}")
    relay = rep.get("relay")
    if relay is None:
        return
    print(f"relay setup (accounts, registries, space): {relay['setup_accounts_s']:.1f} s")
    ma = relay["membership_appends"]
    print(f"membership appends: {ma['entries']} in {ma['total_s']:.2f} s, "
          f"{ma['registry_reads_total']} registry reads; last append "
          f"{ma['last']['total_s'] * 1e3:.1f} ms")
    _print_request("share: PUT epoch 1", relay["share_put"])
    rows = relay["removals"]
    for label, key in (("removal: POST remove entry", "remove_post"),
                       ("removal: PUT next package", "put")):
        _print_summary(label, [r[key] for r in rows])
    for label, key in (("relay, whole removal (POST + PUT)", "relay_removal_s"),
                       ("admin client: due + build", "client_build_s"),
                       ("admin device, whole removal", "admin_removal_s"),
                       ("member device takes the epoch", "member_take_s")):
        print(f"{label:40} {_ms(summary([r[key] * 1e3 for r in rows]))}")
    print(f"member device per rotation: {rows[0]['member_requests']} requests; key "
          f"packages downloaded {rows[0]['member_key_bytes']:,} B (epochs 0-2) .. "
          f"{rows[-1]['member_key_bytes']:,} B (epochs 0-{len(rows) + 1})")
    p = relay["default_limit_probe"]
    print(f"default per-address limit: {p['refused']} of {p['reads']} registry reads "
          f"refused (burst {p['rate_ip_burst']})")


def _print_request(label: str, row: dict[str, Any]) -> None:
    _print_summary(label, [row])


def _print_summary(label: str, rows: list[dict[str, Any]]) -> None:
    print(f"{label:40} {_ms(summary([r['total_s'] * 1e3 for r in rows]))}")
    names = sorted({k for r in rows for k in r["stages_s"]})
    for name in [*names, "other"]:
        values = [(r["other_s"] if name == "other" else r["stages_s"].get(name, 0.0)) * 1e3
                  for r in rows]
        calls = rows[0]["calls"].get(name, "")
        print(f"  {name + (f' ({calls} calls)' if calls else ''):38} {_ms(summary(values))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--devices", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--no-relay", action="store_true", help="protocol core only")
    args = ap.parse_args()
    if args.members < 2 or args.devices < 1 or args.repeat < 1 \
            or args.repeat > args.members - 2:
        ap.error("need --members >= 2, --devices >= 1, 1 <= --repeat <= members - 2")
    runs = [protocol_run(args.members, args.devices) for _ in range(args.repeat)]
    relay = None if args.no_relay else asyncio.run(
        relay_run(args.members, args.devices, args.repeat))
    rep = report(args.members, args.devices, runs, relay)
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print_table(rep)


if __name__ == "__main__":
    main()
