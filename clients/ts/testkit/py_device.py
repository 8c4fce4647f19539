"""The Python side of the TypeScript interop tests (clients/ts/test/interop/).

Driven by the Node test, one command per run, against a real ``sddsf relay
serve`` process; every command prints one JSON object on stdout.

* ``setup HOME_A HOME_B RELAY_URL``: create an account and its first device
  (A, "laptop"), a space ``groceries`` with a few key-value edits, then add a
  second device (B, "browser") with ``Device.add_local`` and sync A so the
  space's keys are wrapped for B. Prints the account's public keys, B's key
  seeds (the TypeScript library becomes B), the space id and the relay key A
  pinned (and, for the adversarial tests, A's key seeds).
* ``put HOME_A KEY VALUE``: A sets KEY and syncs.
* ``snapshot HOME_A``: A syncs and writes a whole-space snapshot (§18).
* ``revoke HOME_A DEVICE_ID``: A revokes the device (hex id) and syncs.
* ``read HOME KEY``: the device of HOME syncs and reads KEY: its value, how
  many heads, and whether every head's authorship verified (a signed record
  of a registry device), with the sync report.
* ``add HOME_A HOME_C NAME``: A appends a registry entry adding a device C
  (with a home at HOME_C) and opens NO key epoch for it, so another device
  must catch up (as when an adding device stops before rotating). Prints C's
  device id.
* ``text HOME [APPEND]``: the device of HOME syncs, appends APPEND (if given)
  to the shared text ``t`` of the document ``notes`` of ``groceries`` (what the
  web app's notes editor edits), syncs again and prints the text.
* ``vaultfork HOME NAME SECRET``: the device of HOME syncs and writes a
  password version of vault item NAME that supersedes nothing (as a device
  that had not seen the current version would: a conflict), and syncs.
* ``putbig HOME_A KEY SIZE``: A sets KEY to SIZE characters (an edit larger
  than one op: sealed as parts, §8.11) and syncs.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pycrdt

from sddsf.client.device import Device
from sddsf.client.engine.common import store_kind
from sddsf.client.engine.identity import new_home
from sddsf.client.kv import KeyValue
from sddsf.client.vault import Vault
from sddsf.crypto import random_bytes
from sddsf.protocol import registry as reg
from sddsf.protocol.identity import DeviceKeys


def _emit(value: dict[str, Any]) -> None:
    print(json.dumps(value), flush=True)


async def setup(home_a: Path, home_b: Path, relay_url: str) -> None:
    laptop, _secret = await Device.create_account(home_a, relay_url, "laptop", passphrase=None,
                                                  insecure_plaintext=True)
    try:
        space = await laptop.create_space("groceries")
        kv = KeyValue(laptop, space)
        kv.put("milk", "2 l")
        kv.put("eggs", "12")
        await laptop.sync()
        kv.put("coffee", "beans")
        kv.put("eggs", "6")  # supersedes the first write
        await laptop.sync()
        browser = await Device.add_local(laptop, home_b, "browser", passphrase=None,
                                         insecure_plaintext=True)
        await browser.close()
        report = await laptop.sync()  # opens the epoch that includes the browser
        if laptop.relay_key is None:
            raise SystemExit("py_device: the laptop did not pin the relay key")
        _emit({
            "account_sign": laptop.account.signing_key.raw.hex(),
            "account_recovery": laptop.account.recovery_key.hex(),
            "account_id": laptop.account.account_id.hex(),
            "laptop_id": laptop.device_id.hex(),
            # For the adversarial tests only: lets the test sign as the laptop.
            "laptop_sign_seed": laptop.keys.signing.seed.hex(),
            "laptop_kx_seed": laptop.keys.kx.seed.hex(),
            "browser_sign_seed": browser.keys.signing.seed.hex(),
            "browser_kx_seed": browser.keys.kx.seed.hex(),
            "browser_id": browser.device_id.hex(),
            "space": space.hex(),
            "relay_key": laptop.relay_key.raw.hex(),
            "rotated": report.rotated,
            "size": laptop.verified_size(space),
        })
    finally:
        await laptop.close()


async def put(home_a: Path, key: str, value: str) -> None:
    laptop = Device.open(home_a, passphrase=None)
    try:
        space = laptop.space_by_name("groceries")
        KeyValue(laptop, space).put(key, value)
        report = await laptop.sync()
        _emit({"pushed": report.pushed, "rejected": report.rejected,
               "size": laptop.verified_size(space)})
    finally:
        await laptop.close()


async def snapshot(home_a: Path) -> None:
    laptop = Device.open(home_a, passphrase=None)
    try:
        await laptop.sync()
        space = laptop.space_by_name("groceries")
        _emit({"size": await laptop.snapshot(space)})
    finally:
        await laptop.close()


async def revoke(home_a: Path, device_hex: str) -> None:
    laptop = Device.open(home_a, passphrase=None)
    try:
        await laptop.sync()
        change = await laptop.revoke(bytes.fromhex(device_hex), "lost")
        report = await laptop.sync()
        _emit({"done": change.done, "rotated": report.rotated})
    finally:
        await laptop.close()


async def read(home_a: Path, key: str) -> None:
    laptop = Device.open(home_a, passphrase=None)
    try:
        report = await laptop.sync()
        space = laptop.space_by_name("groceries")
        kv = KeyValue(laptop, space)
        entry = kv.entry(key)
        _emit({
            "value": None if entry is None else entry.value,
            "heads": 0 if entry is None else len(entry.heads),
            "verified": entry is not None and all(h.verified and h.author is not None
                                                  for h in entry.heads),
            "authors": [] if entry is None else [h.author for h in entry.heads],
            "alerts": [a.what for a in kv.alerts],
            "pulled": report.pulled, "applied": report.applied,
            "skipped": len(report.skipped), "size": laptop.verified_size(space),
        })
    finally:
        await laptop.close()


async def text(home: Path, append: str | None) -> None:
    device = Device.open(home, passphrase=None)
    try:
        await device.sync()
        space = device.space_by_name("groceries")
        doc = device.doc(space, "notes")
        t = doc.get("t", type=pycrdt.Text)
        if append:
            t += append
            await device.sync()
        _emit({"text": str(t), "size": device.verified_size(space)})
    finally:
        await device.close()


async def vaultfork(home: Path, name: str, secret: str) -> None:
    device = Device.open(home, passphrase=None)
    try:
        await device.sync()
        vault = await Vault.open(device)
        # A version that supersedes nothing: concurrent with the current one, on purpose.
        vault._write(name, [("password", secret)], ())
        await device.sync()
        item = vault.item(name)
        _emit({"conflict": bool(item and item.conflict),
               "heads": 0 if item is None else len(item.heads)})
    finally:
        await device.close()


async def add(home_a: Path, home_c: Path, name: str) -> None:
    laptop = Device.open(home_a, passphrase=None)
    try:
        keys = DeviceKeys.from_seeds(random_bytes(32), random_bytes(32))
        state = await laptop.refresh_registry()
        entry = reg.add_device(state, laptop.keys, keys, name, int(time.time() * 1000))
        await laptop.relay.append_registry(laptop.account.account_id, entry)
        # A home as Device.add_local makes it, without the approver's rotation.
        store = new_home(home_c, keys, name, laptop.account, laptop.relay_url, None, True)
        other = Device(store, store_kind(home_c))
        await other.pin_relay()
        await other.refresh_registry()
        await other.close()
        _emit({"device_id": keys.device_id.hex()})
    finally:
        await laptop.close()


async def putbig(home_a: Path, key: str, size: int) -> None:
    laptop = Device.open(home_a, passphrase=None)
    try:
        space = laptop.space_by_name("groceries")
        value = "".join(chr(0x61 + (i * 7) % 26) for i in range(size))
        KeyValue(laptop, space).put(key, value)
        report = await laptop.sync()
        _emit({"pushed": report.pushed, "rejected": report.rejected,
               "size": laptop.verified_size(space), "value_head": value[:16]})
    finally:
        await laptop.close()


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "setup":
        asyncio.run(setup(Path(args[0]), Path(args[1]), args[2]))
    elif command == "put":
        asyncio.run(put(Path(args[0]), args[1], args[2]))
    elif command == "snapshot":
        asyncio.run(snapshot(Path(args[0])))
    elif command == "revoke":
        asyncio.run(revoke(Path(args[0]), args[1]))
    elif command == "read":
        asyncio.run(read(Path(args[0]), args[1]))
    elif command == "add":
        asyncio.run(add(Path(args[0]), Path(args[1]), args[2]))
    elif command == "vaultfork":
        asyncio.run(vaultfork(Path(args[0]), args[1], args[2]))
    elif command == "text":
        asyncio.run(text(Path(args[0]), args[1] if len(args) > 1 else None))
    elif command == "putbig":
        asyncio.run(putbig(Path(args[0]), args[1], int(args[2])))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
