"""HTTP requests to the relay: the real app in process over SQLite
(:class:`fuzz.relay.FuzzRelay`), every route that takes a body or a query,
authenticated and signed as the world's laptop.

Input: one byte picks the route; the rest is the body, or for a ``GET`` the
query string. When a body decodes as canonical CBOR it is a *template*: it is
sent as JSON with every byte string base64-encoded, so mutations reach the
envelopes, entries, packages and blobs inside the JSON; otherwise the bytes
are sent as they are.

Contract in HTTP terms: never a 5xx, always a JSON body, and every error
body is ``{code, message}`` with a stable code.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from fuzz.relay import FuzzRelay
from fuzz.targets import Target
from fuzz.world import hex_values, vectors, world
from sddsf.errors import Code, DecodeError
from sddsf.protocol import backup as bk
from sddsf.protocol.encoding import decode, encode
from sddsf.wire import b64

_CODES = frozenset(c.value for c in Code)


_OPEN: list[tuple[FuzzRelay, Path]] = []


def _relay() -> FuzzRelay:
    if not _OPEN:
        # Under fuzz/driver.py the temporary directory is the caller's (--tmp-dir):
        # libFuzzer ends the process without running Python's exit handlers.
        directory = Path(tempfile.mkdtemp(prefix="sddsf-fuzz-relay-"))
        try:
            relay = FuzzRelay(directory)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        # In a process that exits normally only the files are left to remove.
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        _OPEN.append((relay, directory))
    return _OPEN[0][0]


def close() -> None:
    """Close the relay of an in-process run (a fuzzing process just exits)."""
    while _OPEN:
        relay, directory = _OPEN.pop()
        relay.close()
        shutil.rmtree(directory, ignore_errors=True)
    _routes.cache_clear()


@cache
def _routes() -> tuple[tuple[str, str], ...]:
    # The order is part of the input format (fuzz/regressions/ depend on it):
    # add new routes at the end.
    w, relay = world(), _relay()
    aid, sid, doc = b64(w.account.account_id), b64(w.space), b64(w.doc)
    return (
        ("POST", "/v1/accounts"),
        ("POST", f"/v1/accounts/{aid}/registry"),
        ("POST", "/v1/auth/challenge"),
        ("POST", "/v1/auth/session"),
        ("POST", "/v1/spaces"),
        ("POST", f"/v1/spaces/{sid}/keys"),
        ("POST", f"/v1/spaces/{sid}/ops"),
        ("PUT", f"/v1/spaces/{sid}/docs/{doc}/snapshot"),
        ("POST", f"/v1/spaces/{sid}/ack"),
        ("POST", f"/v1/pairing/{b64(relay.channel)}/messages"),
        ("PUT", f"/v1/accounts/{aid}/backup"),
        ("POST", f"/v1/accounts/{aid}/backup/fetch"),
        ("GET", f"/v1/accounts/{aid}/registry"),
        ("GET", f"/v1/spaces/{sid}/keys"),
        ("GET", f"/v1/spaces/{sid}/ops"),
        ("GET", f"/v1/spaces/{sid}/proofs/inclusion"),
        ("GET", f"/v1/spaces/{sid}/proofs/consistency"),
        ("GET", f"/v1/pairing/{b64(relay.channel)}/messages"),
    )


def _as_json(value: object) -> object:
    if isinstance(value, bytes):
        return b64(value)
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _as_json(v) for k, v in value.items()}
    return value


def run(data: bytes) -> None:
    """Send one body to the route the first byte picks; check the answer."""
    selector, rest = (data[0], data[1:]) if data else (0, b"")
    routes = _routes()
    method, path = routes[selector % len(routes)]
    if method == "GET":
        path, body = f"{path}?{urllib.parse.quote(rest, safe='=&')}", b""
    else:
        try:
            body = json.dumps(_as_json(decode(rest))).encode()
        except DecodeError:
            body = rest
    response = _relay().request(method, path, body)
    if response.status_code >= 500:
        raise AssertionError(f"{method} {path} answered HTTP {response.status_code}: "
                             f"{response.text[:300]}")
    try:
        answer = response.json()
    except ValueError:
        raise AssertionError(f"{method} {path} answered a body that is not JSON") from None
    if response.status_code >= 400 and not (
            isinstance(answer, dict) and answer.get("code") in _CODES
            and isinstance(answer.get("message"), str)):
        raise AssertionError(f"{method} {path}: error body {answer!r} is not {{code, message}}")


def seeds() -> Iterator[bytes]:
    """A valid request for every route (as CBOR templates), and raw JSON."""
    w = world()
    aid = w.account.account_id
    packages = [bytes.fromhex(c["package"]) for c in vectors("key_package")["valid"]]
    envelopes = list(hex_values("envelope", "envelope"))
    kdf = {"alg": "argon2id", "t": 3, "m": 65536, "p": 1, "salt": bytes(16)}
    blob = encode({"v": bk.BACKUP_VERSION, "account": aid, "kdf": kdf, "nonce": bytes(24),
                   "ct": bytes(48)})
    bodies: list[object] = [
        {"genesis": w.entries[0]},
        {"entry": w.entries[-1]},
        {"account_id": aid, "device_id": w.laptop.device_id},
        {"account_id": aid, "device_id": w.laptop.device_id, "challenge": bytes(32),
         "signature": bytes(64)},
        {"space_id": w.space, "key_package": packages[0]},
        {"key_package": packages[1]},
        {"ops": envelopes[:4], "proofs": True},
        {"covers_offset": 0, "blob": next(hex_values("snapshot", "snapshot"))},
        {"offset": 0},
        {"index": 0, "body": encode({"v": 2, "t": "commit", "h": bytes(32)})},
        {"kdf": kdf, "verifier": bytes(32), "blob": blob},
        {"verifier": bytes(32)},
    ]
    for i, body in enumerate(bodies):
        yield bytes([i]) + encode(body)
        yield bytes([i]) + json.dumps(_as_json(body)).encode()
    queries = (b"since=0", b"since_epoch=0", b"after=-1&limit=5", b"index=0&size=1",
               b"first=1&second=1", b"after=-1")
    for i, query in enumerate(queries, start=len(bodies)):
        yield bytes([i]) + query


#: Integers at the edges of what JSON, query strings and the databases hold
#: (parsed by pydantic's Rust core, which coverage does not see).
_EDGES = (*(str(n).encode() for n in (-1, 0, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63,
                                      2**64, 10**30)), b"1e400", b"-0", b"null")

TARGETS = {"http_bodies": Target("http_bodies", run, seeds, max_len=16384, prepare=_routes,
                                 dictionary=_EDGES)}
