"""What a snapshot start costs in process, step by step, against a plain Yjs load
(docs/performance.md, "Cold start from a snapshot").

Device A (in-process relay, SQLite store) overwrites the 50 keys of a map N
times (``--kv``), syncs, and writes one snapshot. Then, in this process, with
``timeit`` (steps: best of 5 repeats of 200 calls):

* ``plain``: ``Doc().apply_update(state)`` of A's final state and reading the map;
* ``local``: ``verify_snapshot`` (signature, frontier, chunk, decryption,
  decoding) of the same snapshot, then the same load and read; ``plain`` and
  ``local`` are timed in alternation (best of 25 rounds of 100 calls each), so
  that the machine's busy spells do not fall on one of them only;
* a client's judging of a served snapshot (its signature and claims) and then
  opening it, with the signature checked once and, as the code did before, twice;
* each step of ``verify_snapshot`` alone, to show which part of the difference
  is fixed cost (the signature, the AEAD, the key derivation) and which is
  Python decoding.

Usage:
    python bench/snapshot_local.py [--kv 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pycrdt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from sddsf.client.device import Device
from sddsf.protocol import labels
from sddsf.protocol import snapshot as snap
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS
from sddsf.testing.memory_transport import BASE_URL, InProcessRelay


def best_us(fn: Callable[[], object]) -> float:
    return round(min(timeit.repeat(fn, number=200, repeat=5)) / 200 * 1e6, 1)


def paired_best_us(*fns: Callable[[], object], rounds: int = 25,
                   number: int = 100) -> list[float]:
    """Best time of each function over ``rounds`` rounds that run them in turn,
    so that a busy spell of the machine slows all of them alike (their ratio is
    the figure; timing them one after the other let it swing by 0.5)."""
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], timeit.timeit(fn, number=number))
    return [round(b / number * 1e6, 1) for b in best]


async def measure(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with InProcessRelay() as relay:
            a, _ = await Device.create_account(Path(tmp) / "a", BASE_URL, "a", passphrase=None,
                                               insecure_plaintext=True,
                                               transport=relay.http_transport())
            a.snapshot_every = 0
            space = await a.create_space("kv")
            kv = a.doc(space, "kv").get("kv", type=pycrdt.Map)
            for i in range(n):
                kv[f"k{i % 50}"] = f"value {i}"
                a.flush()
                if i % 200 == 199:
                    await a.sync()
            await a.sync()
            await a.snapshot(space)
            state = a.doc(space, "kv").get_update()
            _, blob = await a.relay.get_snapshot(space, snap.SPACE_SNAPSHOT_DOC)
            chunks = [await a.relay.get_snapshot_chunk(space, c)
                      for c in snap.snapshot_claims(blob).chunk_ids]
            registry, keys = a.registry(), a._keys_cached(space)
            await a.close()
    return steps(n, state, blob, chunks, registry, keys, space)


def steps(n: int, state: bytes, blob: bytes, chunks: list[bytes], registry: Any,
          keys: Any, space: bytes) -> dict[str, Any]:
    limits = DEFAULT_PROTOCOL_LIMITS

    def load(update: bytes) -> dict[str, object]:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(update)
        return dict(doc.get("kv", type=pycrdt.Map))

    def local() -> dict[str, object]:
        s = snap.verify_snapshot(blob, registry=registry, space=space, epoch_keys=keys,
                                 chunks=chunks)
        return load(s.docs["kv"])

    assert local() == load(state)
    m = snap.open_snapshot(blob, registry=registry, space=space, epoch_keys=keys)
    d = snap._decode(blob, limits)
    key = snap._snapshot_key(keys[m.epoch], m.space, m.epoch)
    signer = registry.device(m.author).public.signing_key
    signed = labels.labelled(labels.SNAPSHOT_SIG, d.body_bytes)
    out: dict[str, Any] = {"kv_ops": n, "state_bytes": len(state),
                           "manifest_bytes": len(blob), "chunks": len(chunks)}
    out["plain_us"], out["local_us"] = paired_best_us(lambda: load(state), local)
    out["local_vs_plain"] = round(out["local_us"] / out["plain_us"], 2)
    def judged(*, once: bool) -> object:
        # A client judges a served snapshot (its claims), then opens it.
        claims = snap.check_snapshot_signature(blob, registry=registry, accept_revoked=True)
        return snap.open_snapshot(blob, registry=registry, space=space, epoch_keys=keys,
                                  accept_revoked=True, checked=claims if once else None)

    out["client_judge_then_open_us"] = dict(zip(
        ("checked once", "checked twice (as before)"),
        paired_best_us(lambda: judged(once=True), lambda: judged(once=False)), strict=True))
    out["steps_us"] = {
        "verify_snapshot": best_us(lambda: snap.verify_snapshot(
            blob, registry=registry, space=space, epoch_keys=keys, chunks=chunks)),
        "open (manifest: decode, signature, frontier, chains)": best_us(
            lambda: snap.open_snapshot(blob, registry=registry, space=space,
                                       epoch_keys=keys)),
        "  decode the manifest": best_us(lambda: snap._decode(blob, limits)),
        "  signature check": best_us(lambda: signer.verify(signed, d.signature)),
        "load (chunks: id, key, nonce, AD, decrypt, decode)": best_us(
            lambda: snap.load_snapshot(m, chunks, epoch_keys=keys)),
        "  snapshot key (HKDF)": best_us(lambda: snap._snapshot_key(keys[m.epoch], m.space,
                                                                     m.epoch)),
        "  chunk ids (BLAKE2b)": best_us(lambda: [snap.chunk_id(c) for c in chunks]),
        "  decrypt the chunks": best_us(lambda: [snap.aead_decrypt(
            key, snap._chunk_nonce(m.nonce, i), c,
            snap._chunk_ad(m.space, m.author, m.epoch, m.size, m.nonce, i, len(chunks)))
            for i, c in enumerate(chunks)]),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kv", type=int, default=500, help="map overwrites before the snapshot")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(measure(args.kv)), indent=2))


if __name__ == "__main__":
    main()
