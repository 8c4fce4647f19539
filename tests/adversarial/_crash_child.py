"""A device process for the crash loops (run as a script; killed with SIGKILL at will).

``python _crash_child.py HOME NAME JOURNAL STOP_FILE SEED``

Opens the device home, then until ``STOP_FILE`` exists: sets ``NAME:i = i`` in
the space's "kv" document, where ``i`` is the number of this device's edits
the document already holds (so an edit lost before it was persisted is made
again, and the keys of one device stay contiguous), and syncs. Every
acknowledgement and tree head the relay sends is appended to ``JOURNAL``
(one ``write`` per line: a kill cannot leave half a line) before the device
acts on it. A relay that is down (or restarting) is retried. After the stop
file appears it syncs until nothing is pending and exits 0; any other error
ends the process with a traceback (exit 1).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path

import httpx
import pycrdt

from sddsf.client.device import Device
from sddsf.errors import RateLimitedError, UnavailableError
from sddsf.testing.checkers import Ack, ObservedHead, record_device, record_to_json

RETRYABLE = (UnavailableError, RateLimitedError)


async def sync(device: Device, rng: random.Random) -> bool:
    try:
        await device.sync()
    except RETRYABLE:
        await asyncio.sleep(rng.uniform(0.02, 0.1))
        return False
    return True


async def main() -> None:
    home, name, journal, stop, seed = sys.argv[1:6]
    rng = random.Random(f"{seed}/{name}/{os.getpid()}")
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def log(record: Ack | ObservedHead) -> None:
        os.write(fd, (record_to_json(record) + "\n").encode())

    device = Device.open(Path(home), passphrase=None, transport=httpx.AsyncHTTPTransport())
    record_device(log, name, device)
    [(space, _)] = device.spaces()
    kv = device.doc(space, "kv").get("kv", type=pycrdt.Map)
    while not os.path.exists(stop):
        mine = sum(1 for key in kv if key.startswith(f"{name}:"))
        kv[f"{name}:{mine}"] = mine
        await sync(device, rng)
        await asyncio.sleep(rng.uniform(0, 0.03))
    for _ in range(1000):
        if await sync(device, rng) and device.pending_count() == 0:
            break
    else:
        raise SystemExit("could not push the pending ops")
    await device.close()
    os.close(fd)
    print("DONE", flush=True)


asyncio.run(main())
