"""Registry entries: :func:`decode_entry`, :meth:`RegistryState.apply` on a real
genesis state and on the full verified state (plain and governed by k-of-n
approvals), and :func:`verify_registry` from genesis.

``registry_entry`` takes whole entry bytes. ``registry_signed`` takes a body:
it is signed by whoever its ``signer`` names (the account or a device whose
keys the world holds) and countersigned by the device its ``device`` or
``action.device`` introduces, so the rules behind the signatures see fuzzed bodies.

Oracle beyond the contract: applying an accepted entry again changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

from fuzz.contract import attempt
from fuzz.targets import Target
from fuzz.world import World, hex_values, world
from sddsf.protocol import registry as reg
from sddsf.protocol.approval import ActionType
from sddsf.protocol.encoding import decode
from sddsf.protocol.identity import DeviceKeys

_POLICY_TS = 10**13  # after every vector entry


@cache
def _governed() -> tuple[reg.RegistryState, bytes, bytes]:
    """The world's registry after a policy of two approvals; that policy entry; and a
    pending proposal (by the laptop) to revoke the phone."""
    w = world()
    policy = reg.set_policy(w.state, w.laptop, {"approvals": 2}, _POLICY_TS)
    governed = w.state.apply(policy)
    proposal = reg.propose(governed, w.laptop, ActionType.REVOKE,
                           {"target": w.phone.device_id, "reason": "lost"}, _POLICY_TS)
    return governed, policy, proposal


@cache
def _states() -> tuple[reg.RegistryState, ...]:
    """Genesis; the full registry; governed; governed with a proposal pending."""
    w = world()
    governed, _, proposal = _governed()
    return (w.genesis_state, w.state, governed, governed.apply(proposal))


def run(data: bytes) -> None:
    """Decode, apply to every state, verify from genesis."""
    w = world()
    entry = reg.decode_entry(data)
    for state in _states():
        after = attempt(state.apply, data)
        if after is not None and after.apply(entry) is not after:
            raise AssertionError("re-applying an accepted registry entry changed the state")
    attempt(reg.verify_registry, [data], pinned=None)
    attempt(reg.verify_registry, [w.entries[0], data], pinned=w.account.public)


def _introduced(w: World, body: dict[object, object]) -> DeviceKeys | None:
    device = body.get("device")
    action = body.get("action")
    if not isinstance(device, dict) and isinstance(action, dict):
        device = action.get("device")
    if not isinstance(device, dict):
        return None
    return next((d for d in w.devices if d.signing.public.raw == device.get("sign")),
                w.newcomer)


def run_signed(data: bytes) -> None:
    """Sign ``data`` as an entry body the way its signer would, then :func:`run`."""
    w = world()
    value = attempt(decode, data)
    body = value if isinstance(value, dict) else {}
    signer = w.account if body.get("signer") == w.account.account_id \
        else w.keys_of(body.get("signer"))
    cosigner = _introduced(w, body)
    cosig = reg.countersign_body(data, cosigner) if cosigner is not None else None
    run(reg.assemble_entry(data, reg.sign_body(data, signer), cosig))


def seeds() -> Iterator[bytes]:
    """The registry vectors, and next entries of every type on the world's state."""
    yield from hex_values("registry", "entries")
    yield from _next_entries()


def _next_entries() -> Iterator[bytes]:
    w = world()
    s, ts = w.state, _POLICY_TS
    space = w.space
    yield reg.add_device(s, w.laptop, w.newcomer, "new", ts)
    yield reg.revoke_device(s, w.phone, w.laptop.device_id, "lost", ts, {space: 3})
    yield reg.set_policy(s, w.phone, {"approvals": 2, "veto_window_s": 60, "x": "y"}, ts)
    yield reg.recover(s, w.account, w.newcomer, "new", {w.laptop.device_id: {space: 1}}, ts)
    governed, policy, proposal = _governed()
    yield policy
    yield proposal
    yield reg.propose(governed, w.laptop, ActionType.ADD,
                      {"device": reg.device_fields(w.newcomer.public, "new")}, ts,
                      new_device=w.newcomer)
    pid = reg.entry_hash(proposal)
    after = governed.apply(proposal)
    yield reg.approve(after, w.phone, pid, ts)
    yield reg.veto(after, w.phone, pid, "no", ts)
    yield reg.enact(after, w.laptop, pid, ts, {space: 2})


def signed_seeds() -> Iterator[bytes]:
    """The bodies of :func:`seeds`."""
    for entry in seeds():
        yield reg.decode_entry(entry).body_bytes


TARGETS = {
    "registry_entry": Target("registry_entry", run, seeds),
    "registry_signed": Target("registry_signed", run_signed, signed_seeds),
}
