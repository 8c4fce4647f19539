"""python-spake2 (what the Python client pairs with) for the TypeScript SPAKE2 test.

Reads a JSON list of cases on stdin, each ``{"side", "password", "entropy",
"peer"}`` (hex; ``side`` "A" or "B"; ``peer`` the other side's message, or
null), and prints one JSON list: per case ``{"message", "key"}`` (``key`` null
without a peer, or ``{"error": ...}`` when python-spake2 refuses the peer's message).
The entropy is given, so the outputs are reproducible test data.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from spake2 import SPAKE2_A, SPAKE2_B
from spake2.spake2 import SPAKEError

ID_A = b"sddsf/v2/pairing/initiator"
ID_B = b"sddsf/v2/pairing/joiner"


def run(case: dict[str, Any]) -> dict[str, Any]:
    entropy = bytes.fromhex(case["entropy"])
    cls = SPAKE2_A if case["side"] == "A" else SPAKE2_B
    side = cls(bytes.fromhex(case["password"]), idA=ID_A, idB=ID_B,
               entropy_f=lambda n: entropy[:n])
    message = side.start()
    key: str | dict[str, str] | None = None
    if case["peer"] is not None:
        try:
            key = side.finish(bytes.fromhex(case["peer"])).hex()
        except (SPAKEError, ValueError) as exc:
            key = {"error": type(exc).__name__}
    return {"message": message.hex(), "key": key}


def main() -> None:
    print(json.dumps([run(c) for c in json.load(sys.stdin)]))


if __name__ == "__main__":
    main()
