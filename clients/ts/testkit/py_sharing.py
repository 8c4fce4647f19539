"""The Python side of the TypeScript shared-space interop test
(clients/ts/test/interop/sharing.test.ts).

Driven by the Node test, one command per run, against a real ``sddsf relay
serve`` process; every command prints one JSON object on stdout. Devices are
Python ``Device`` homes in the relay's work directory; the document is
``notes`` with the shared text ``t`` (what the web app's editor edits).

* ``setup HOME_ALICE HOME_CAROL RELAY_URL``: Alice's account and laptop, a
  space named ``vault`` whose text she starts and whose vault document holds
  one item; Carol's account and laptop. Prints
  both accounts' public keys and ids, the space id and the relay key.
* ``share HOME SPACE ACCOUNT_SIGN ACCOUNT_RECOVERY ROLE``: the device of HOME
  shares the space with that account (its keys as the people compared them).
* ``join HOME SPACE OWNER_SIGN OWNER_RECOVERY``: the device of HOME joins the
  owner's space.
* ``text HOME SPACE [APPEND]``: the device of HOME syncs, appends APPEND (if
  given) to the text, sets the key ``last`` of the space's key-value document
  to it (a record signed by this device) and syncs again; prints the text,
  the space's newest key package (hex), the members' account ids and the
  device id.
* ``remove HOME SPACE ACCOUNT_ID``: the device of HOME removes that member (the
  sync after it opens an epoch without it).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pycrdt

from sddsf.client.device import Device
from sddsf.client.kv import KeyValue
from sddsf.client.vault import Vault
from sddsf.protocol.identity import AccountPublic
from sddsf.protocol.membership import Role


def _emit(value: dict[str, Any]) -> None:
    print(json.dumps(value), flush=True)


def _text(device: Device, space: bytes) -> pycrdt.Text:
    text: pycrdt.Text = device.doc(space, "notes").get("t", type=pycrdt.Text)
    return text


async def setup(home_alice: Path, home_carol: Path, relay_url: str) -> None:
    alice, _ = await Device.create_account(home_alice, relay_url, "alice-laptop", passphrase=None,
                                           insecure_plaintext=True)
    carol, _ = await Device.create_account(home_carol, relay_url, "carol-laptop", passphrase=None,
                                           insecure_plaintext=True)
    try:
        # Named "vault", as a personal vault is: for the accounts it is shared
        # with, another account's space is never their own vault.
        space = await alice.create_space("vault")
        _text(alice, space).insert(0, "alice: hello")
        (await Vault.open(alice, space=space)).put("wifi", "password", "family-wifi-secret")
        await alice.sync()
        await carol.sync()
        if alice.relay_key is None:
            raise SystemExit("py_sharing: alice did not pin the relay key")
        _emit({**{f"{n}_{k}": v for n, d in (("alice", alice), ("carol", carol)) for k, v in (
            ("sign", d.account.signing_key.raw.hex()), ("recovery", d.account.recovery_key.hex()),
            ("account_id", d.account.account_id.hex()))},
            "space": space.hex(), "relay_key": alice.relay_key.raw.hex()})
    finally:
        await alice.close()
        await carol.close()


async def share(home: Path, space: str, sign: str, recovery: str, role: str) -> None:
    device = Device.open(home, passphrase=None)
    try:
        member = AccountPublic.from_keys(bytes.fromhex(sign), bytes.fromhex(recovery))
        report = await device.sharing.share(bytes.fromhex(space), member, Role(role))
        _emit({"rotated": report.rotated, "rejected": report.rejected})
    finally:
        await device.close()


async def join(home: Path, space: str, sign: str, recovery: str) -> None:
    device = Device.open(home, passphrase=None)
    try:
        owner = AccountPublic.from_keys(bytes.fromhex(sign), bytes.fromhex(recovery))
        await device.sharing.join(bytes.fromhex(space), owner, "notes")
        _emit({"text": str(_text(device, bytes.fromhex(space)))})
    finally:
        await device.close()


async def text(home: Path, space_hex: str, append: str | None) -> None:
    device = Device.open(home, passphrase=None)
    space = bytes.fromhex(space_hex)
    try:
        await device.sync()
        t = _text(device, space)
        if append:
            t += append
            KeyValue(device, space).put("last", append)
            report = await device.sync()
            if report.rejected:
                raise SystemExit(f"py_sharing: the relay refused the edit: {report.rejected}")
        newest = device.engine.keyring.stored_packages(space)[-1]
        _emit({"text": str(t), "package": newest.raw.hex(), "epoch": newest.epoch,
               "members": sorted(m.account_id.hex() for m in device.sharing.members(space)),
               "size": device.verified_size(space), "device_id": device.device_id.hex()})
    finally:
        await device.close()


async def remove(home: Path, space: str, account_id: str) -> None:
    device = Device.open(home, passphrase=None)
    try:
        report = await device.sharing.remove(bytes.fromhex(space), bytes.fromhex(account_id))
        _emit({"rotated": report.rotated})
    finally:
        await device.close()


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "setup":
        asyncio.run(setup(Path(args[0]), Path(args[1]), args[2]))
    elif command == "share":
        asyncio.run(share(Path(args[0]), *args[1:5]))
    elif command == "join":
        asyncio.run(join(Path(args[0]), *args[1:4]))
    elif command == "text":
        asyncio.run(text(Path(args[0]), args[1], args[2] if len(args) > 2 else None))
    elif command == "remove":
        asyncio.run(remove(Path(args[0]), args[1], args[2]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
