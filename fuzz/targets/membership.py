"""Space membership entries: :func:`decode_entry`, :meth:`MembershipState.apply`
on the empty state and on every prefix of the vectors' longest valid log, and
:func:`fold`.

``membership_entry`` takes whole entry bytes. ``membership_signed`` takes a body:
it is signed by the device its ``device`` names when the vectors hold that
device's keys (alice's laptop, phone or tablet, bob's or carol's laptop), so the
rules behind the signature see fuzzed bodies.

Oracles beyond the contract: an accepted entry leaves at least one admin, and
applying it again is refused (a replay).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

from fuzz.contract import attempt
from fuzz.targets import Target
from fuzz.world import hex_values, vectors, world
from sddsf.errors import MembershipError
from sddsf.protocol import membership as ms
from sddsf.protocol import registry as reg
from sddsf.protocol.encoding import decode
from sddsf.protocol.identity import AccountKeys, DeviceKeys


@cache
def _context() -> tuple[dict[bytes, reg.RegistryState], dict[bytes, DeviceKeys],
                        tuple[ms.MembershipState, ...]]:
    """Registries by account id, device keys by device id, and the states along the
    longest valid log (empty first)."""
    w = world()
    doc = vectors("membership")
    regs = {w.account.account_id: w.state}
    keys = {d.device_id: d for d in (w.laptop, w.phone, w.tablet)}
    for m in doc["context"]["members"].values():
        account = AccountKeys.from_secret(bytes.fromhex(m["account_secret"]))
        regs[account.account_id] = reg.verify_registry(
            [bytes.fromhex(e) for e in m["registry"]], pinned=account.public)
        d = m["device"]
        dev = DeviceKeys.from_seeds(bytes.fromhex(d["signing_seed"]), bytes.fromhex(d["kx_seed"]))
        keys[dev.device_id] = dev
    longest = max(doc["valid"], key=lambda c: len(c["entries"]))
    states = [ms.MembershipState.empty(w.space)]
    for e in longest["entries"]:
        states.append(states[-1].apply(bytes.fromhex(e), regs.get))
    return regs, keys, tuple(states)


def run(data: bytes) -> None:
    """Decode, apply to every state, fold from empty."""
    regs, _, states = _context()
    entry = ms.decode_entry(data)
    for state in states:
        after = attempt(state.apply, entry, regs.get)
        if after is None:
            continue
        if not after.admins():
            raise AssertionError("an accepted membership entry left no admin")
        try:
            after.apply(entry, regs.get)
        except MembershipError:
            pass
        else:
            raise AssertionError("re-applying an accepted membership entry was accepted")
    ms.fold(states[0].space, [data], regs.get)


def run_signed(data: bytes) -> None:
    """Sign ``data`` as a body with the device it names (or alice's laptop), then :func:`run`."""
    _, keys, _ = _context()
    value = attempt(decode, data)
    body = value if isinstance(value, dict) else {}
    device = body.get("device")
    signer = keys.get(device, world().laptop) if isinstance(device, bytes) else world().laptop
    run(ms.assemble_entry(data, ms.sign_body(data, signer)))


def seeds() -> Iterator[bytes]:
    """The membership vectors (valid logs and invalid entries)."""
    yield from hex_values("membership", "entries", "entry")


def signed_seeds() -> Iterator[bytes]:
    """The bodies of :func:`seeds` that decode."""
    for entry in seeds():
        outer = attempt(decode, entry)
        if isinstance(outer, list) and len(outer) == 3 and isinstance(outer[1], bytes):
            yield outer[1]


TARGETS = {
    "membership_entry": Target("membership_entry", run, seeds, max_len=2048),
    "membership_signed": Target("membership_signed", run_signed, signed_seeds, max_len=2048),
}
