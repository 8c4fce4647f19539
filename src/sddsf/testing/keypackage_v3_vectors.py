"""Deterministic vectors of version 3 key packages (tests/vectors/key_package_v3.json).

Run ``python -m sddsf.testing.keypackage_v3_vectors tests/vectors`` to (re)write
the file; ``tests/unit/test_keypackage_v3_vectors.py`` regenerates it and
compares, and runs every case through the Python verifier. The TypeScript
client reads the same file (``clients/ts/test/own_vectors.test.ts``).

The world is :mod:`sddsf.testing.vectorgen`'s (Alice: laptop, phone, a revoked
tablet; registry seq 3) plus Bob and Carol with one laptop each (as in
``membership.json``). The space's membership log is Alice's ``create``, then
``add`` Bob (writer) and ``add`` Carol (reader). Its key chain: epoch 0 a
version 2 package of Alice alone, epoch 1 version 3 for Alice and Bob (by
Alice's phone), epoch 2 version 3 for all three (by Bob's laptop).

The context holds that chain (``chain``); each case names how many of its
packages come before it (``previous``). Valid cases give the package, its
decoded fields and the epoch key its recipients open (and, for the last, every
key Bob and Carol learn back to epoch 0). Invalid cases give the package,
the verifier (``v3``, or ``v2`` for the one-account verifier, both with the
owner Alice's registry for version 2 packages) and the error code, covering the
steps of protocol.md 10.8 in order.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sddsf.errors import Code
from sddsf.protocol import keypackage as kp
from sddsf.protocol import labels
from sddsf.protocol import membership as ms
from sddsf.protocol import registry as reg
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.identity import AccountKeys, DeviceKeys
from sddsf.protocol.keypackage_v3 import build_key_package_v3
from sddsf.protocol.labels import labelled
from sddsf.testing.vectorgen import NOW_MS, SPACE, seed
from sddsf.testing.vectorgen import _World as World

__all__ = ["FILE", "generate", "render", "write"]

FILE = "key_package_v3.json"


def _device(name: str) -> DeviceKeys:
    return DeviceKeys.from_seeds(seed(f"{name}/sign"), seed(f"{name}/kx"))


class _Shared:
    """Alice's world, Bob and Carol, the membership log and the folded member sets."""

    def __init__(self) -> None:
        self.w = World()
        self.people = {n: AccountKeys.from_secret(seed(f"account/{n}")) for n in ("bob", "carol")}
        self.devices = {n: _device(f"{n}/laptop") for n in self.people}
        self.entries = {n: [reg.genesis(a, self.devices[n], "laptop", NOW_MS - 45_000)]
                        for n, a in self.people.items()}
        self.alice = self.w.account.account_id
        self.bob, self.carol = (self.people[n].account_id for n in ("bob", "carol"))
        self.regs = {self.alice: self.w.state, **{
            a.account_id: reg.verify_registry(self.entries[n], pinned=a.public)
            for n, a in self.people.items()}}
        self.log = [ms.create(SPACE, self.w.laptop, self.w.state, NOW_MS - 10_000)]
        state = ms.MembershipState.empty(SPACE).apply(self.log[0], self.regs.get)
        self.heads = [state.head]
        for name, role in (("bob", ms.Role.WRITER), ("carol", ms.Role.READER)):
            self.log.append(ms.add_member(state, self.w.laptop, self.w.state,
                                          self.people[name].public, role, NOW_MS - 9_000))
            state = state.apply(self.log[-1], self.regs.get)
            self.heads.append(state.head)

    def v3(self, creator: DeviceKeys, creator_account: bytes, members: list[bytes],
           head: bytes, epoch: int, prev: bytes, previous_keys: list[bytes],
           space: bytes = SPACE) -> bytes:
        count = sum(len(self.regs[a].active_devices()) + 1 for a in members)
        return build_key_package_v3(
            creator=creator, creator_account=creator_account, registries=self.regs,
            members=members, membership_head=head, space=space, epoch=epoch, prev=prev,
            epoch_key=seed(f"v3/epoch-key/{epoch}"), ts_ms=NOW_MS, previous_keys=previous_keys,
            ephemeral_seeds=[seed(f"v3/eph/{epoch}/{i}") for i in range(count)])

    def v2(self, creator: DeviceKeys, epoch: int, prev: bytes,
           previous_keys: list[bytes]) -> bytes:
        n = len(self.w.state.active_devices()) + 1
        return kp.build_key_package(
            creator=creator, registry=self.w.state, space=SPACE, epoch=epoch, prev=prev,
            epoch_key=seed(f"v3/epoch-key/{epoch}"), ts_ms=NOW_MS, previous_keys=previous_keys,
            ephemeral_seeds=[seed(f"v3/eph/v2/{epoch}/{i}") for i in range(n)])


def _resigned(package: bytes, signer: DeviceKeys,
              change: Callable[[dict[str, Any]], None]) -> bytes:
    """``package`` with its body changed by ``change`` and signed again by ``signer``
    (the defect is the change, not the signature)."""
    outer = decode(package)
    body = decode(outer[1]) if isinstance(outer, list) else None
    if not isinstance(body, dict):
        raise TypeError("not a key package")
    change(body)
    raw = encode(body)
    return encode([body["v"], raw, signer.sign(labelled(labels.KEY_PACKAGE_SIG, raw))])


def _recipients(edit: Callable[[list[list[bytes]]], list[list[bytes]]]
                ) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body["recipients"] = sorted(edit(list(body["recipients"])), key=lambda r: r[0])
    return change


def _set(**fields: object) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body.update(fields)
    return change


def _members(seqs: Mapping[bytes, int]) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body["members"] = [[a, seqs.get(a, s)] for a, s in body["members"]]
    return change


def _without(rid: bytes) -> Callable[[dict[str, Any]], None]:
    return _recipients(lambda rows: [r for r in rows if r[0] != rid])


def _with(rid: bytes) -> Callable[[dict[str, Any]], None]:
    return _recipients(lambda rows: [*rows, [rid, seed(f"v3/fake-sealed/{rid.hex()}")]])


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        del body[key]
    return change


def _decoded(pkg: bytes) -> dict[str, Any]:
    p = kp.decode_key_package(pkg)
    return {"version": p.version, "epoch": p.epoch, "hash": p.hash.hex(),
            "creator": p.creator.hex(),
            "creator_account": p.creator_account.hex() if p.creator_account else None,
            "members": [[a.hex(), s] for a, s in p.members] if p.members else None,
            "membership": p.membership.hex() if p.membership else None,
            "recipients": sorted(r.hex() for r in p.recipients)}


def generate() -> dict[str, Any]:
    """The vector file's content."""
    s = _Shared()
    w, alice, bob, carol = s.w, s.alice, s.bob, s.carol
    keys = [seed(f"v3/epoch-key/{e}") for e in range(3)]
    p0 = s.v2(w.laptop, 0, bytes(32), [])
    p1 = s.v3(w.phone, alice, [alice, bob], s.heads[1], 1, kp.package_hash(p0), keys[:1])
    p2 = s.v3(s.devices["bob"], bob, [alice, bob, carol], s.heads[2], 2, kp.package_hash(p1),
              keys[1:2])
    after_p0, after_p1 = 1, 2  # packages of the chain before a case

    def p1_like(**over: Any) -> bytes:
        args: dict[str, Any] = {"creator": w.phone, "creator_account": alice,
                                "members": [alice, bob], "head": s.heads[1], "epoch": 1,
                                "prev": kp.package_hash(p0), "previous_keys": keys[:1]}
        args.update(over)
        return s.v3(**args)

    openers = {"bob/laptop": s.devices["bob"].device_id, "carol/laptop": s.devices["carol"]
               .device_id, "alice/phone": w.phone.device_id, "alice/recovery": alice}
    valid = []
    for name, chain, pkg in (("epoch 0: version 2, Alice alone (before sharing)", 0, p0),
                             ("epoch 1: version 3 for Alice and Bob, by Alice's phone",
                              after_p0, p1),
                             ("epoch 2: version 3 for all three, by Bob's laptop", after_p1, p2)):
        decoded = _decoded(pkg)
        valid.append({"name": name, "previous": chain, "package": pkg.hex(),
                      **decoded, "epoch_key": keys[decoded["epoch"]].hex(),
                      "opened_by": sorted(n for n, rid in openers.items()
                                          if rid.hex() in decoded["recipients"])})
    valid[-1]["history"] = {n: {str(e): k.hex() for e, k in enumerate(keys)}
                            for n in ("bob/laptop", "carol/laptop")}
    tablet, bob_laptop = w.tablet, s.devices["bob"]
    invalid = [{"name": n, "previous": chain, "package": pkg.hex(),
                "verifier": v, "code": code} for n, chain, pkg, v, code in (
        ("a version 2 package given to the shared verifier", 0, p0, "v3", Code.WRONG_CONTEXT),
        ("a version 3 package given to the one-account verifier", after_p0, p1, "v2",
         Code.WRONG_CONTEXT),
        ("a version 2 package after a version 3 one", after_p1,
         s.v2(w.laptop, 2, kp.package_hash(p1), keys[1:2]), "v2", Code.WRONG_CONTEXT),
        ("another space", after_p0, p1_like(space=bytes(16)), "v3", Code.WRONG_CONTEXT),
        ("an epoch skipped", after_p0, p2, "v3", Code.UNKNOWN_EPOCH),
        ("a broken prev link", after_p0, p1_like(prev=bytes(range(32))), "v3",
         Code.WRONG_CONTEXT),
        ("a membership head never applied", after_p0, p1_like(head=seed("v3/no-such-head")),
         "v3", Code.WRONG_CONTEXT),
        ("a member left out", after_p0, p1_like(head=s.heads[2]), "v3", Code.NOT_AUTHORIZED),
        ("a non-member listed", after_p0, p1_like(members=[alice, bob, carol]), "v3",
         Code.NOT_AUTHORIZED),
        ("a position beyond the member's registry", after_p0,
         _resigned(p1, w.phone, _members({bob: 5})), "v3", Code.WRONG_CONTEXT),
        ("a position older than the previous package's", after_p0,
         _resigned(p1, w.phone, _members({alice: 2})), "v3", Code.WRONG_CONTEXT),
        ("the creator account not a member", after_p0,
         _resigned(p1, w.phone, _set(creator_account=carol)), "v3", Code.NOT_AUTHORIZED),
        ("the creator not a device of its account", after_p0,
         _resigned(p1, bob_laptop, _set(creator=bob_laptop.device_id)), "v3",
         Code.UNKNOWN_DEVICE),
        ("the creator revoked (the tablet)", after_p0,
         _resigned(p1, tablet, _set(creator=tablet.device_id)), "v3", Code.REVOKED),
        ("a bit flip in the signature", after_p0, p1[:-1] + bytes([p1[-1] ^ 1]), "v3",
         Code.SIG_INVALID),
        ("a member's recovery key left out", after_p0, _resigned(p1, w.phone, _without(bob)),
         "v3", Code.NOT_AUTHORIZED),
        ("a revoked device included (the tablet)", after_p0,
         _resigned(p1, w.phone, _with(tablet.device_id)), "v3", Code.REVOKED),
        ("a device of no member included (Carol's)", after_p0,
         _resigned(p1, w.phone, _with(s.devices["carol"].device_id)), "v3",
         Code.UNKNOWN_DEVICE),
        ("an active device left out (Bob's)", after_p0,
         _resigned(p1, w.phone, _without(bob_laptop.device_id)), "v3", Code.NOT_AUTHORIZED),
        ("members not sorted", after_p0,
         _resigned(p1, w.phone, lambda b: b.update(members=b["members"][::-1])), "v3",
         Code.MALFORMED),
        ("no members", after_p0, _resigned(p1, w.phone, _set(members=[])), "v3",
         Code.MALFORMED),
        ("a registry_seq field in version 3", after_p0,
         _resigned(p1, w.phone, _set(registry_seq=3)), "v3", Code.MALFORMED),
        ("no membership field", after_p0, _resigned(p1, w.phone, _delete("membership")), "v3",
         Code.MALFORMED),
    )]
    context = {
        **w.context(),
        "members": {n: {"account_secret": seed(f"account/{n}").hex(),
                        "account_id": s.people[n].account_id.hex(),
                        "registry": [e.hex() for e in s.entries[n]],
                        "device": {"signing_seed": seed(f"{n}/laptop/sign").hex(),
                                   "kx_seed": seed(f"{n}/laptop/kx").hex(),
                                   "device_id": s.devices[n].device_id.hex()}}
                    for n in s.people},
        "membership": [e.hex() for e in s.log],
        "chain": [p.hex() for p in (p0, p1, p2)],
    }
    return {"generator": "python -m sddsf.testing.keypackage_v3_vectors tests/vectors",
            "context": context, "valid": valid, "invalid": invalid}


def render(doc: dict[str, Any]) -> str:
    """The exact text written to the vector file."""
    return json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n"


def write(directory: Path) -> Path:
    """Write the vector file into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE
    path.write_text(render(generate()))
    return path


if __name__ == "__main__":
    print(write(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/vectors")))
