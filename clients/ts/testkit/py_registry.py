"""Python's verdict on registry chains under given protocol limits, for the
TypeScript device-caps test: reads ``{"limits": {...}, "pinned": [sign, recovery],
"chains": [[entry hex, ...], ...]}`` on stdin and prints, per chain, the error
code (null when it verifies) and the head (hex, when it verifies).
"""

from __future__ import annotations

import json
import sys

from sddsf.errors import SddsfError
from sddsf.protocol.identity import AccountPublic
from sddsf.protocol.limits import ProtocolLimits
from sddsf.protocol.registry import verify_registry


def main() -> None:
    req = json.load(sys.stdin)
    limits = ProtocolLimits(**req["limits"])
    sign, recovery = (bytes.fromhex(k) for k in req["pinned"])
    pinned = AccountPublic.from_keys(sign, recovery)
    out = []
    for chain in req["chains"]:
        try:
            state = verify_registry([bytes.fromhex(e) for e in chain], pinned=pinned, limits=limits)
            out.append({"code": None, "head": state.head.hex()})
        except SddsfError as exc:
            out.append({"code": exc.code.value, "head": None})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
