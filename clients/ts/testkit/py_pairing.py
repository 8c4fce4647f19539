"""The Python pairing core (``sddsf.protocol.pairing``) for the TypeScript pairing
test: reads one JSON object on stdin and prints one JSON object.

* codes: ``{"codes": [[nameplate, words], ...]}`` -> for each a fresh code's text
  and SPAKE2 password (hex);
* keys: ``{"key", "channel", "commitment", "initiator", "joiner"}`` (hex) -> the
  initiator's and the joiner's derived keys, tags and words;
* open: ``{"kind", "key", "message", "clear"}`` -> the opened payload's fields (hex
  for bytes), as the Python initiator reads a message of the TypeScript joiner.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from mnemonic import Mnemonic

from sddsf.protocol import pairing as pp

WORDS = Mnemonic("english").wordlist


def _hex(value: object) -> object:
    return value.hex() if isinstance(value, bytes) else value


def main() -> None:
    req: dict[str, Any] = json.load(sys.stdin)
    if "codes" in req:
        out = []
        for nameplate, words in req["codes"]:
            code = pp.new_code(nameplate, words)
            out.append({"text": code.text(WORDS), "password": code.password.hex()})
        print(json.dumps(out))
        return
    if "channel" in req:
        b = {k: bytes.fromhex(req[k]) for k in ("key", "channel", "commitment", "initiator",
                                                   "joiner")}
        res = {}
        for role in ("initiator", "joiner"):
            k = pp.pairing_keys(role, b["key"], channel_id=b["channel"], commitment=b["commitment"],
                                initiator_msg=b["initiator"], joiner_msg=b["joiner"],
                                wordlist=WORDS)
            res[role] = {"send": k.send.hex(), "receive": k.receive.hex(),
                         "my_confirm": k.my_confirm.hex(), "sas": list(k.sas)}
        print(json.dumps(res))
        return
    outer, payload = pp.open_message(bytes.fromhex(req["message"]), req["kind"],
                                     bytes.fromhex(req["key"]), clear=tuple(req["clear"]))
    print(json.dumps({"payload": {k: _hex(payload.raw(k)) for k in req["fields"]},
                      "clear": {k: _hex(outer.raw(k)) for k in req["clear"]}}))


if __name__ == "__main__":
    main()
