"""The Python core's side of the envelope interop property (test/interop/seal_property.test.ts).

Reads one JSON case per line on stdin, answers one JSON line each:
{"envelope": HEX}  the op the Python core seals from exactly these inputs
(device seeds, header fields, nonce, epoch key, plaintext), and, for the
TypeScript-sealed envelope in "ts_envelope", the header fields and the
plaintext the Python core reads from it (decoded, signature checked, opened),
or {"error": CODE} when it refuses it.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from sddsf.errors import SddsfError
from sddsf.protocol.clock import HLCTimestamp
from sddsf.protocol.envelope import OpHeader, TreeHeadRef, decode_envelope, open_op, seal_op
from sddsf.protocol.identity import DeviceKeys
from sddsf.protocol.vv import VersionVector


def _header(case: dict[str, Any], keys: DeviceKeys) -> OpHeader:
    seen = case["seen"]
    return OpHeader(
        space=bytes.fromhex(case["space"]), doc=bytes.fromhex(case["doc"]), author=keys.device_id,
        seq=int(case["seq"]), prev=bytes.fromhex(case["prev"]),
        deps=VersionVector({bytes.fromhex(a): int(s) for a, s in case["deps"]}),
        epoch=int(case["epoch"]), ts=HLCTimestamp(int(case["ts"][0]), int(case["ts"][1])),
        seen=None if seen is None else TreeHeadRef(int(seen[0]), bytes.fromhex(seen[1])),
        nonce=bytes.fromhex(case["nonce"]), reg=int(case["reg"]))


def _read(raw: bytes, keys: DeviceKeys, epoch_key: bytes) -> dict[str, Any]:
    try:
        env = decode_envelope(raw)
        env.verify_signature(keys.public.signing_key)
        plaintext = open_op(env, epoch_key)
    except SddsfError as exc:
        return {"error": exc.code.value}
    h = env.header
    return {"plaintext": plaintext.hex(), "seq": str(h.seq), "epoch": str(h.epoch),
            "reg": str(h.reg), "ts": [h.ts.wall_ms, h.ts.counter], "op_id": env.op_id.hex(),
            "deps": sorted([a.hex(), str(s)] for a, s in h.deps.items())}


def main() -> None:
    for line in sys.stdin:
        case = json.loads(line)
        try:
            keys = DeviceKeys.from_seeds(bytes.fromhex(case["sign_seed"]),
                                         bytes.fromhex(case["kx_seed"]))
            epoch_key = bytes.fromhex(case["epoch_key"])
            env = seal_op(keys, _header(case, keys), bytes.fromhex(case["plaintext"]), epoch_key)
            answer = {"envelope": env.raw.hex(),
                      "read": _read(bytes.fromhex(case["ts_envelope"]), keys, epoch_key)}
        except Exception:  # one answer per case, whatever happens: the next case stays in step
            answer = {"crash": traceback.format_exc()}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
