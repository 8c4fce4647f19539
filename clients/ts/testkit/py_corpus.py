"""Differential corpus: the Python core's verdict on thousands of mutated inputs.

Run by clients/ts/test/differential/differential.test.ts, which feeds every
case to the TypeScript library and requires the same verdict (the same error
code, or the same result when accepted). The inputs are the project's own
vectors (tests/vectors/*.json) mutated deterministically (``random.Random``
seeded from the command line):

* byte-level: bit flips, deleted, inserted and replaced bytes, truncations;
* structural: a value somewhere inside the signed body replaced by another
  type or value, a map key removed or added, an array item dropped or
  repeated, then re-encoded canonically and re-signed with the right key (the
  vector keys are derived from public seeds), so the checks after decoding
  and after the signature are reached too.

Also plain canonical-encoding cases (``cbor``): every mutated outer structure
decoded with the generic limits; ``registry-chain`` cases: random runs of
proposals, approvals, vetoes, enactments and direct changes, at random times
and by random signers, on governed accounts (docs/protocol.md §9.8); chunked
snapshots (a mutated manifest, re-signed, or a mutated chunk), attestations
(re-signed), and op payload sequences (§8.11: one-op edits and multi-part
edits, a payload mutated in place).

Prints one JSON object: ``{"cases": [{kind, name, input, code, result}, ...]}``
where ``code`` is the Python error code (``null`` when accepted) and
``result`` a short digest of what was accepted.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sddsf.crypto import Ed25519PublicKey, Ed25519SigningKey
from sddsf.errors import SddsfError
from sddsf.protocol import keypackage as kp
from sddsf.protocol import registry as reg
from sddsf.protocol.approval import ActionType
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.identity import AccountKeys, DeviceKeys
from sddsf.protocol.labels import (
    KEY_PACKAGE_SIG,
    OP_CIPHERTEXT,
    OP_SIG,
    REGISTRY_COSIG,
    REGISTRY_SIG,
    SNAPSHOT_ATTEST_SIG,
    SNAPSHOT_SIG,
    TREE_HEAD_SIG,
    labelled,
    tagged_hash,
)
from sddsf.protocol.payload import assemble
from sddsf.protocol.registry import verify_registry
from sddsf.protocol.rules import EpochWindow, MemoryChainView, RuleSettings, verify_op
from sddsf.protocol.snapshot import verify_attestation, verify_snapshot
from sddsf.protocol.treehead import verify_tree_head
from sddsf.testing.vectorgen import seed

VECTORS = Path(__file__).resolve().parents[3] / "tests" / "vectors"


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text())


# ------------------------------------------------------------------ mutation
ODD_VALUES: list[object] = [
    None, True, False, 0, 1, 2, 255, 2**53 + 1, 2**64 - 1, -1, -(2**64),
    b"", bytes(16), bytes(24), bytes(31), bytes(32), bytes(33), bytes(64),
    "", "v", "add", "genesis", "x" * 300, [], [b"\x01" * 32, 1], {}, {"v": 1}]


def _require(condition: bool, why: str) -> None:
    """Stop the generator (a changed vector file, not a verdict)."""
    if not condition:
        raise SystemExit(f"py_corpus: {why}")


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    op = rng.randrange(5)
    i = rng.randrange(len(b)) if b else 0
    if op == 0 and b:
        b[i] ^= 1 << rng.randrange(8)
    elif op == 1 and b:
        del b[i]
    elif op == 2:
        b.insert(i, rng.randrange(256))
    elif op == 3 and b:
        b[i] = rng.choice([0x00, 0x17, 0x18, 0x19, 0x1f, 0x40, 0x5f, 0x7f, 0x80, 0x9f, 0xa0, 0xbf,
                           0xc0, 0xd8, 0xf4, 0xf6, 0xf7, 0xf8, 0xf9, 0xfb, 0xff])
    else:
        del b[rng.randrange(len(b) + 1):]
    return bytes(b)


def _paths(value: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [path]
    if isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*path, i))
    elif isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*path, k))
    return out


def _get(value: Any, path: tuple[object, ...]) -> Any:
    for p in path:
        value = value[p]
    return value


def mutate_value(value: Any, rng: random.Random) -> Any:
    value = decode(encode(value))  # a deep copy
    path = rng.choice(_paths(value))
    target = _get(value, path)
    op = rng.randrange(6)
    if op == 0 and isinstance(target, dict) and target:
        del target[rng.choice(sorted(target, key=str))]
    elif op == 1 and isinstance(target, dict):
        target[rng.choice(["x", "v", "zz", "type"])] = rng.choice(ODD_VALUES)
    elif op == 2 and isinstance(target, list) and target:
        target.pop(rng.randrange(len(target)))
    elif op == 3 and isinstance(target, list) and target:
        target.insert(rng.randrange(len(target) + 1), rng.choice(target))
    elif op == 4 and isinstance(target, int) and not isinstance(target, bool) and path:
        parent = _get(value, path[:-1])
        parent[path[-1]] = max(-(2**64), min(2**64 - 1, target + rng.choice([-1, 1, 2**32])))
    elif path:
        parent = _get(value, path[:-1])
        parent[path[-1]] = rng.choice(ODD_VALUES)
    else:
        value = rng.choice(ODD_VALUES)
    return value


# ------------------------------------------------------------------ harness
class Case:
    def __init__(self) -> None:
        self.cases: list[dict[str, Any]] = []

    def add(self, kind: str, name: str, data: bytes, run: Callable[[bytes], str]) -> None:
        try:
            result, code = run(data), None
        except SddsfError as exc:
            result, code = None, exc.code.value
        self.cases.append({"kind": kind, "name": name, "input": data.hex(), "code": code,
                           "result": result})
        try:
            value = decode(data)
            cbor_code, cbor_result = None, encode(value).hex()
        except SddsfError as exc:
            cbor_code, cbor_result = exc.code.value, None
        self.cases.append({"kind": "cbor", "name": f"{kind}: {name}", "input": data.hex(),
                           "code": cbor_code, "result": cbor_result})


def signer_for(ctx: dict[str, Any], ident: bytes) -> Ed25519SigningKey | None:
    account = AccountKeys.from_secret(bytes.fromhex(ctx["account_secret"]))
    if ident == account.account_id:
        return account.signing
    for d in ctx["devices"].values():
        keys = DeviceKeys.from_seeds(bytes.fromhex(d["signing_seed"]), bytes.fromhex(d["kx_seed"]))
        if ident == keys.device_id:
            return keys.signing
    return None


def restructure(raw: bytes, rng: random.Random, resign: Callable[[list[Any]], list[Any]]) -> bytes:
    """Mutate the decoded body (item 1 of the outer array) and re-sign it."""
    outer = decode(raw)
    if not isinstance(outer, list) or not isinstance(outer[1], bytes):
        raise SystemExit("py_corpus: a vector is not [version, body, ...]")
    body = decode(outer[1])
    outer[1] = encode(mutate_value(body, rng))
    return encode(resign(outer))


def envelope_cases(out: Case, rng: random.Random, n: int) -> None:
    data = load("envelope.json")
    ctx = data["context"]
    account = AccountKeys.from_secret(bytes.fromhex(ctx["account_secret"]))
    reg = verify_registry([bytes.fromhex(e) for e in ctx["registry"]], pinned=account.public)
    settings = RuleSettings(max_skew_ms=ctx["rules"]["max_skew_ms"],
                            epoch_grace_ms=ctx["rules"]["epoch_grace_ms"])
    for case in data["valid"]:
        preceding = [bytes.fromhex(p) for p in case["preceding"]]

        def run(env: bytes, preceding: list[bytes] = preceding) -> str:
            chains = MemoryChainView()
            kw: dict[str, Any] = {"space": bytes.fromhex(ctx["space"]), "registry": reg,
                                  "epochs": EpochWindow(ctx["epoch"]["current"],
                                                        ctx["epoch"]["started_ms"],
                                                        tuple(ctx["epoch"]["package_seqs"])),
                                  "chains": chains, "now_ms": ctx["now_ms"], "settings": settings}
            for p in preceding:
                chains.record(verify_op(p, **kw).envelope)
            v = verify_op(env, **kw)
            return f"{v.outcome.value}/{v.envelope.op_id.hex()}"

        raw = bytes.fromhex(case["envelope"])
        author = decode(decode(raw)[1])["author"]  # type: ignore[index]
        key = signer_for(ctx, author)
        if key is None:
            raise SystemExit("py_corpus: no key for an envelope vector's author")

        def resign(outer: list[Any], key: Ed25519SigningKey = key) -> list[Any]:
            outer[3] = key.sign(labelled(OP_SIG, outer[1], tagged_hash(OP_CIPHERTEXT, outer[2])))
            return outer

        for i in range(n):
            out.add("envelope", f"{case['name']} bytes #{i}", mutate_bytes(raw, rng), run)
            out.add("envelope", f"{case['name']} struct #{i}", restructure(raw, rng, resign), run)


def registry_cases(out: Case, rng: random.Random, n: int) -> None:
    data = load("registry.json")
    ctx = data["context"]
    account = AccountKeys.from_secret(bytes.fromhex(ctx["account_secret"]))
    for case in data["valid"]:
        entries = [bytes.fromhex(e) for e in case["entries"]]
        for pos, raw in enumerate(entries):
            body = decode(decode(raw)[1])  # type: ignore[index]
            by = signer_for(ctx, body["signer"])  # type: ignore[index]
            dev = body.get("device") if isinstance(body, dict) else None
            action = body.get("action") if isinstance(body, dict) else None
            if dev is None and isinstance(action, dict):
                dev = action.get("device")
            new_pk = dev.get("sign") if isinstance(dev, dict) else None
            new_key = next((k for k in (signer_for(ctx, d) for d in _device_ids(ctx))
                            if k is not None and k.public.raw == new_pk), None)

            def run(entry: bytes, pos: int = pos, entries: list[bytes] = entries) -> str:
                chain = [*entries[:pos], entry, *entries[pos + 1:]]
                state = verify_registry(chain, pinned=account.public)
                devices = sorted([r.name, r.status.value] for r in state.devices.values())
                return f"{state.head.hex()}/{_json(devices)}"

            def resign(outer: list[Any], by: Ed25519SigningKey | None = by,
                       new_key: Ed25519SigningKey | None = new_key) -> list[Any]:
                sigs = dict(outer[2]) if isinstance(outer[2], dict) else {}
                if by is not None:
                    sigs["by"] = by.sign(labelled(REGISTRY_SIG, outer[1]))
                if new_key is not None and "new" in sigs:
                    sigs["new"] = new_key.sign(labelled(REGISTRY_COSIG, outer[1]))
                outer[2] = sigs
                return outer

            for i in range(n):
                name = f"{case['name']} entry {pos}"
                out.add("registry", f"{name} bytes #{i}", mutate_bytes(raw, rng), run)
                out.add("registry", f"{name} struct #{i}", restructure(raw, rng, resign), run)
            out.cases.append({"kind": "registry-chain", "name": case["name"],
                              "input": [e.hex() for e in entries], "code": None,
                              "result": run(raw)})


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _device_ids(ctx: dict[str, Any]) -> list[bytes]:
    return [bytes.fromhex(d["device_id"]) for d in ctx["devices"].values()]


def key_package_cases(out: Case, rng: random.Random, n: int) -> None:
    data = load("key_package.json")
    ctx = data["context"]
    account = AccountKeys.from_secret(bytes.fromhex(ctx["account_secret"]))
    reg = verify_registry([bytes.fromhex(e) for e in ctx["registry"]], pinned=account.public)
    space = bytes.fromhex(ctx["space"])
    for case in data["valid"]:
        previous = (kp.verify_key_package(bytes.fromhex(case["previous"]), registry=reg,
                                          space=space, previous=None)
                    if case["previous"] else None)

        def run(pkg: bytes, previous: kp.KeyPackage | None = previous) -> str:
            p = kp.verify_key_package(pkg, registry=reg, space=space, previous=previous)
            key = kp.open_epoch_key(p, account.account_id, account.recovery)
            earlier = sorted((e, k.hex()) for e, k in kp.unwrap_previous_keys(p, key).items())
            return f"{p.hash.hex()}/{key.hex()}/{_json(earlier)}"

        raw = bytes.fromhex(case["package"])
        creator = signer_for(ctx, decode(decode(raw)[1])["creator"])  # type: ignore[index]

        def resign(outer: list[Any], key: Ed25519SigningKey | None = creator) -> list[Any]:
            if key is not None:
                outer[2] = key.sign(labelled(KEY_PACKAGE_SIG, outer[1]))
            return outer

        for i in range(n):
            out.add("key_package", f"{case['name']} bytes #{i}", mutate_bytes(raw, rng), run)
            out.add("key_package", f"{case['name']} struct #{i}", restructure(raw, rng, resign),
                    run)


def snapshot_cases(out: Case, rng: random.Random, n: int) -> None:
    data = load("snapshot.json")
    ctx = data["context"]
    account = AccountKeys.from_secret(bytes.fromhex(ctx["account_secret"]))
    reg = verify_registry([bytes.fromhex(e) for e in ctx["registry"]], pinned=account.public)
    keys = {int(e): bytes.fromhex(k) for e, k in ctx["epoch_keys"].items()}

    def run(snap: bytes) -> str:
        s = verify_snapshot(snap, registry=reg, space=bytes.fromhex(ctx["space"]), epoch_keys=keys)
        return f"{s.size}/{s.root.hex()}/{_json(sorted(s.docs))}"

    for case in data["valid"]:
        raw = bytes.fromhex(case["snapshot"])
        author = signer_for(ctx, decode(decode(raw)[1])["author"])  # type: ignore[index]

        def resign(outer: list[Any], key: Ed25519SigningKey | None = author) -> list[Any]:
            if key is not None:
                outer[2] = key.sign(labelled(SNAPSHOT_SIG, outer[1]))
            return outer

        for i in range(n):
            out.add("snapshot", f"{case['name']} bytes #{i}", mutate_bytes(raw, rng), run)
            out.add("snapshot", f"{case['name']} struct #{i}", restructure(raw, rng, resign), run)


def tree_head_cases(out: Case, rng: random.Random, n: int) -> None:
    data = load("tree_head.json")
    relay = Ed25519SigningKey.from_seed(seed("relay"))
    key = Ed25519PublicKey.from_bytes(bytes.fromhex(data["context"]["relay_public_key"]))
    _require(relay.public == key, "the tree head vectors use another relay key")
    log = bytes.fromhex(data["context"]["log"])

    def run(th: bytes) -> str:
        h = verify_tree_head(th, key, log=log)
        return f"{h.size}/{h.root.hex()}/{h.ts}"

    def resign(outer: list[Any]) -> list[Any]:
        outer[2] = relay.sign(labelled(TREE_HEAD_SIG, outer[1]))
        return outer

    for case in data["valid"]:
        raw = bytes.fromhex(case["tree_head"])
        for i in range(n):
            out.add("tree_head", f"{case['name']} bytes #{i}", mutate_bytes(raw, rng), run)
            out.add("tree_head", f"{case['name']} struct #{i}", restructure(raw, rng, resign), run)



def chunked_cases(out: Case, rng: random.Random, n: int) -> None:
    data = load("snapshot_chunked.json")
    ctx = data["context"]
    account = AccountKeys.from_secret(bytes.fromhex(ctx["account_secret"]))
    reg = verify_registry([bytes.fromhex(e) for e in ctx["registry"]], pinned=account.public)
    keys = {int(e): bytes.fromhex(k) for e, k in ctx["epoch_keys"].items()}
    space = bytes.fromhex(ctx["space"])
    for case in data["valid"]:
        manifest = bytes.fromhex(case["manifest"])
        chunks = [bytes.fromhex(c) for c in case["chunks"]]

        def run(m: bytes, chunks: list[bytes] = chunks) -> str:
            s = verify_snapshot(m, registry=reg, space=space, epoch_keys=keys, chunks=chunks)
            return f"{s.size}/{s.id.hex()}/{_json(sorted(s.docs))}"

        author = signer_for(ctx, decode(decode(manifest)[1])["author"])  # type: ignore[index]

        def resign(outer: list[Any], key: Ed25519SigningKey | None = author) -> list[Any]:
            if key is not None:
                outer[2] = key.sign(labelled(SNAPSHOT_SIG, outer[1]))
            return outer

        served = [c.hex() for c in chunks]
        for i in range(n):
            out.add("chunked", f"{case['name']} bytes #{i}", mutate_bytes(manifest, rng), run)
            out.cases[-2]["chunks"] = served  # [-1] is the same input's cbor case
            out.add("chunked", f"{case['name']} struct #{i}", restructure(manifest, rng, resign),
                    run)
            out.cases[-2]["chunks"] = served
            which = rng.randrange(len(chunks))
            bad = [*chunks[:which], mutate_bytes(chunks[which], rng), *chunks[which + 1:]]
            out.cases.append(_chunk_case(case["name"], i, manifest, bad, run))


def _chunk_case(name: str, i: int, manifest: bytes, chunks: list[bytes],
                run: Callable[..., str]) -> dict[str, Any]:
    try:
        result, code = run(manifest, chunks), None
    except SddsfError as exc:
        result, code = None, exc.code.value
    return {"kind": "chunked", "name": f"{name} chunk #{i}", "input": manifest.hex(),
            "chunks": [c.hex() for c in chunks], "code": code, "result": result}


def attestation_cases(out: Case, rng: random.Random, n: int) -> None:
    data = load("snapshot_attestation.json")
    ctx = data["context"]
    account = AccountKeys.from_secret(bytes.fromhex(ctx["account_secret"]))
    reg = verify_registry([bytes.fromhex(e) for e in ctx["registry"]], pinned=account.public)
    space = bytes.fromhex(ctx["space"])

    def run(raw: bytes) -> str:
        a = verify_attestation(raw, registry=reg, space=space)
        return f"{a.attester.hex()}/{a.verdict}/{a.snapshot.hex()}/{a.size}/{a.ts}"

    for case in data["valid"]:
        raw = bytes.fromhex(case["attestation"])
        attester = signer_for(ctx, bytes.fromhex(case["attester"]))

        def resign(outer: list[Any], key: Ed25519SigningKey | None = attester) -> list[Any]:
            if key is not None:
                outer[2] = key.sign(labelled(SNAPSHOT_ATTEST_SIG, outer[1]))
            return outer

        for i in range(n):
            out.add("attestation", f"{case['name']} bytes #{i}", mutate_bytes(raw, rng), run)
            out.add("attestation", f"{case['name']} struct #{i}",
                    restructure(raw, rng, resign), run)


def payload_cases(out: Case, rng: random.Random, n: int) -> None:
    """Each valid payload sequence with one payload mutated (bytes, or its decoded
    map changed and re-encoded; payloads are not signed)."""
    data = load("payload.json")
    doc = bytes.fromhex(data["context"]["doc"])
    for case in data["valid"]:
        ops = [(int(op["seq"]), bytes.fromhex(op["payload"])) for op in case["ops"]]
        for i in range(n):
            which = rng.randrange(len(ops))
            seq, payload = ops[which]
            if i % 2:
                changed = mutate_bytes(payload, rng)
            else:
                changed = encode(mutate_value(decode(payload), rng))
            attempt = [*ops[:which], (seq, changed), *ops[which + 1:]]
            try:
                edits = assemble(attempt, doc=doc)
                result: str | None = _json([[e.name, [u.hex() for u in e.updates]]
                                            for e in edits])
                code: str | None = None
            except SddsfError as exc:
                result, code = None, exc.code.value
            out.cases.append({"kind": "payload", "name": f"{case['name']} #{i}",
                              "input": [[s, p.hex()] for s, p in attempt], "code": code,
                              "result": result})


def _scenario_keys(n: int) -> list[DeviceKeys]:
    return [DeviceKeys.from_seeds(seed(f"scenario/{i}/sign"), seed(f"scenario/{i}/kx"))
            for i in range(n)]


def _random_entry(state: reg.RegistryState, rng: random.Random, account: AccountKeys,
                  pool: list[DeviceKeys], named: set[int], step: int, ts: int) -> bytes:
    """One random device change on ``state`` (may be refused by the rules)."""
    active = [k for k in pool if state.is_active(k.device_id)]
    signer = rng.choice([*active, pool[rng.randrange(len(pool))]])
    pending = list(state.proposals.values())
    move = rng.randrange(9)
    if move == 0:
        new = rng.choice([k for j, k in enumerate(pool) if j not in named] or pool)
        return reg.propose(state, signer, ActionType.ADD,
                           {"device": reg.device_fields(new.public, f"n{step}")}, ts,
                           new_device=new)
    if move == 1:
        return reg.propose(state, signer, ActionType.REVOKE,
                           {"target": rng.choice(active).device_id, "reason": "lost"}, ts)
    if move == 2:
        return reg.propose(state, signer, ActionType.POLICY,
                           {"policy": {"approvals": rng.choice([1, 2])}}, ts)
    if move in (3, 4) and pending:
        return reg.approve(state, signer, rng.choice(pending).id, ts)
    if move == 5 and pending:
        who: DeviceKeys | AccountKeys = rng.choice([signer, account])
        return reg.veto(state, who, rng.choice(pending).id, "no", ts)
    if move in (6, 7) and pending:
        cutoff = {bytes(15) + b"\x01": 1} if rng.random() < 0.2 else None
        return reg.enact(state, rng.choice([signer, account]), rng.choice(pending).id, ts, cutoff)
    return reg.add_device(state, rng.choice([signer, account]), rng.choice(pool), f"x{step}", ts)


def _backdated(entry: bytes, state: reg.RegistryState, account: AccountKeys,
               pool: list[DeviceKeys]) -> bytes:
    """An approval entry re-dated before the chain's last entry, re-signed."""
    outer = decode(entry)
    if not isinstance(outer, list) or not isinstance(outer[1], bytes):
        return entry
    body = decode(outer[1])
    if not isinstance(body, dict) or body.get("type") not in ("propose", "approve", "veto",
                                                              "enact"):
        return entry
    body["ts"] = max(0, state.last_ts - 1)
    outer[1] = encode(body)
    key = signer_for_keys(body["signer"], account, pool)  # type: ignore[arg-type]
    sigs = dict(outer[2]) if isinstance(outer[2], dict) else {}
    if key is not None:
        sigs["by"] = key.sign(labelled(REGISTRY_SIG, outer[1]))
    outer[2] = sigs
    return encode(outer)


def _governed_start(account: AccountKeys, pool: list[DeviceKeys], rng: random.Random,
                    now: int) -> tuple[list[bytes], reg.RegistryState]:
    """Genesis, two added devices, and a random approval policy set by the account key."""
    chain = [reg.genesis(account, pool[0], "d0", now)]
    state = verify_registry(chain, pinned=account.public)
    for i in (1, 2):
        chain.append(reg.add_device(state, pool[0], pool[i], f"d{i}", now + i))
        state = state.apply(chain[-1])
    policy = {"approvals": rng.choice([1, 2, 3]), "veto_window_s": rng.choice([0, 60, 3600]),
              "proposal_ttl_s": rng.choice([3_600, 7_200, 604_800])}
    if policy["proposal_ttl_s"] <= policy["veto_window_s"]:
        policy["proposal_ttl_s"] = 7_200
    chain.append(reg.set_policy(state, account, policy, now + 10))
    return chain, state.apply(chain[-1])


def approval_cases(out: Case, rng: random.Random, n: int) -> None:
    """Random runs of device changes on governed accounts (§9.8): proposals,
    approvals, vetoes, enactments, direct changes, at random times, by random
    signers. Every attempted chain is a case: the Python verdict on the whole
    chain (the accepted prefix plus the attempt)."""
    account = AccountKeys.from_secret(seed("scenario/account"))
    pool = _scenario_keys(12)
    pinned = [account.signing.public.raw.hex(), account.recovery.public.hex()]
    for run in range(n):
        ts = 1_767_225_600_000
        chain, state = _governed_start(account, pool, rng, ts)
        named = {0, 1, 2}
        ts += 100
        for step in range(14):
            ts += rng.choice([0, 1, 30_000, 600_000, 3_600_001, 8_000_000])
            try:
                entry = _random_entry(state, rng, account, pool, named, step, ts)
            except SddsfError:
                continue
            if rng.random() < 0.1:
                entry = _backdated(entry, state, account, pool)
            attempt = [*chain, entry]
            try:
                after = verify_registry(attempt, pinned=account.public)
                code: str | None = None
                devices = sorted([r.name, r.status.value] for r in after.devices.values())
                result: str | None = f"{after.head.hex()}/{_json(devices)}"
            except SddsfError as exc:
                code, result = exc.code.value, None
            out.cases.append({"kind": "registry-chain", "name": f"approval run {run} step {step}",
                              "input": [e.hex() for e in attempt], "code": code,
                              "result": result, "pinned": pinned})
            if code is None:
                chain, state = attempt, state.apply(entry)
                named |= {j for j, k in enumerate(pool) if state.device(k.device_id) is not None}


def signer_for_keys(ident: bytes, account: AccountKeys,
                    pool: list[DeviceKeys]) -> Ed25519SigningKey | None:
    if ident == account.account_id:
        return account.signing
    return next((k.signing for k in pool if k.device_id == ident), None)


def main(argv: list[str]) -> None:
    # Deterministic test data, never keys: a seeded PRNG is what is wanted.
    rng = random.Random(int(argv[0]) if argv else 1)  # noqa: S311
    n = int(argv[1]) if len(argv) > 1 else 40
    out = Case()
    envelope_cases(out, rng, n)
    registry_cases(out, rng, max(1, n // 4))
    key_package_cases(out, rng, n)
    snapshot_cases(out, rng, n)
    tree_head_cases(out, rng, n)
    approval_cases(out, rng, max(1, n // 2))
    chunked_cases(out, rng, max(1, n // 2))
    attestation_cases(out, rng, n)
    payload_cases(out, rng, n)
    json.dump({"cases": out.cases}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
