"""First-sync bundles (protocol 17.9) and the Python core's verdict on each.

Run by clients/ts/test/unit/bootstrap.test.ts, which verifies every case with
the TypeScript decoder and requires the same verdict: the same error code, or
the same components when accepted. The bundles are signed by the relay key of
seed ``00 01 … 1f`` for the request (account ``b"a" * 32``, device ``b"d" * 32``,
nonce ``b"n" * 16``):
a valid one, one without registry and policy, bit flips across a bundle, and
bodies changed (re-signed) into other requests, shapes or versions.

Prints one JSON object: ``{"relay_key": hex, "cases": [{name, input, code, result}, ...]}``.
"""

from __future__ import annotations

import json
from typing import Any

from sddsf.errors import SddsfError
from sddsf.protocol import labels
from sddsf.protocol.bootstrap import (
    Bootstrap,
    verify_bootstrap,
)
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.labels import labelled
from sddsf.testing.bootstrap_samples import ACCOUNT, DEVICE, KEY, NONCE, bundle

SPACE_KEYS = ("space", "size", "root", "epoch", "head")
EMPTY_SNAP = [bytes(16), 1, None, None, []]


def body() -> dict[str, object]:
    """The valid bundle's body, decoded."""
    outer = decode(bundle())
    value = decode(outer[1]) if isinstance(outer, list) and isinstance(outer[1], bytes) else None
    if not isinstance(value, dict):
        raise SystemExit("py_bootstrap: the body is not a map")
    return value


def resigned(change: dict[str, object], version: int = 1) -> bytes:
    new_body = body()
    new_body.update(change)
    new = encode(new_body)
    return encode([version, new, KEY.sign(labelled(labels.BOOTSTRAP_SIG, new))])


def space_with(**change: object) -> list[object]:
    """The valid body's spaces with the first one changed (a None value removes the key)."""
    spaces = body()["spaces"]
    if not isinstance(spaces, list) or not isinstance(spaces[0], dict):
        raise SystemExit("py_bootstrap: unexpected spaces")
    for k, v in change.items():
        if v is None:
            del spaces[0][k]
        else:
            spaces[0][k] = v
    return spaces


def _hex(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


def digest(b: Bootstrap) -> dict[str, Any]:
    """The accepted bundle's components, as the TypeScript test prints them."""
    return {"account": b.account.hex(), "device": b.device.hex(), "ts": b.ts,
            "registry": None if b.registry is None else [e.hex() for e in b.registry],
            "policy": _hex(b.policy),
            "spaces": [{"space": s.space_id.hex(), "size": s.size, "root": s.root.hex(),
                        "epoch": s.epoch, "head": s.head.hex(),
                        "keys": None if s.keys is None else [k.hex() for k in s.keys],
                        "snaps": [[n.doc.hex(), n.covers_offset, _hex(n.blob), _hex(n.snapshot_id),
                                   [a.hex() for a in n.attestations]] for n in s.snapshots],
                        "chunks": sorted([c.hex(), v.hex()] for c, v in s.chunks.items()),
                        "after": s.after,
                        "ops": [[o.offset, o.op_id.hex(), o.leaf_hash.hex(), _hex(o.envelope)]
                                for o in s.ops]}
                       for s in b.spaces]}


def cases() -> list[tuple[str, bytes]]:
    raw = bundle()
    out = [("valid", raw), ("no registry or policy", bundle(registry=None, policy=None))]
    out += [(f"bit {i}", raw[:i] + bytes([raw[i] ^ (1 << (i % 8))]) + raw[i + 1:])
            for i in range(0, len(raw), max(1, len(raw) // 96))]
    out += [(f"another {f}", bundle(**{f: b"x" * (16 if f == "nonce" else 32)}))
            for f in ("account", "device", "nonce")]
    out += [("fields missing", resigned({"spaces": [{"space": b"s" * 16}]})),
            ("zeros", resigned({"spaces": [dict.fromkeys(SPACE_KEYS, 0)]})),
            ("registry of ints", resigned({"registry": [1]})),
            ("policy int", resigned({"policy": 3})),
            ("extra key", resigned({"extra": 1})),
            ("ts negative", resigned({"ts": -1})),
            ("version 2", resigned({"v": 2}, version=2)),
            ("after without ops", resigned({"spaces": space_with(after=None)})),
            ("ops without after", resigned({"spaces": space_with(ops=None)})),
            ("three snaps", resigned({"spaces": space_with(snaps=[EMPTY_SNAP] * 3)})),
            ("snap of 4", resigned({"spaces": space_with(snaps=[[bytes(16), 1, None, []]])})),
            ("covers -2",
             resigned({"spaces": space_with(snaps=[[bytes(16), -2, None, None, []]])})),
            ("blob int", resigned({"spaces": space_with(snaps=[[bytes(16), 1, 5, None, []]])})),
            ("chunk of 3", resigned({"spaces": space_with(chunks=[[b"c", b"d", b"e"]])})),
            ("op offset -1", resigned({"spaces": space_with(ops=[[-1, b"o", b"l", None]])})),
            ("op id text", resigned({"spaces": space_with(ops=[[0, "o", b"l", None]])})),
            ("epoch -2", resigned({"spaces": space_with(epoch=-2)})),
            ("space 15 bytes", resigned({"spaces": space_with(space=b"s" * 15)})),
            ("head too large", resigned({"spaces": space_with(head=b"h" * 1025)})),
            ("keys text", resigned({"spaces": space_with(keys=["k"])})),
            ("unknown space key", resigned({"spaces": space_with(extra=1)}))]
    return out


def main() -> None:
    result = []
    for name, raw in cases():
        case: dict[str, Any] = {"name": name, "input": raw.hex(), "code": None, "result": None}
        try:
            case["result"] = digest(verify_bootstrap(raw, KEY.public, account=ACCOUNT,
                                                     device=DEVICE, nonce=NONCE))
        except SddsfError as exc:
            case["code"] = exc.code.value
        result.append(case)
    print(json.dumps({"relay_key": KEY.public.raw.hex(), "cases": result}))


if __name__ == "__main__":
    main()
