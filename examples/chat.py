"""Three people chat live in a space one of them shares with the other two.

    python examples/chat.py RELAY_URL WORK_DIR   # e.g. http://127.0.0.1:8787 /tmp/chat
"""

import asyncio
import sys
from pathlib import Path
from typing import Any

import pycrdt

from sddsf import Device
from sddsf.protocol.membership import Role

PASSPHRASE = "an example passphrase; ask the user for theirs"  # noqa: S105
SAYS = {"alice": "hi", "bob": "hello", "carol": "hey"}


def messages(doc: pycrdt.Doc[Any]) -> list[dict[str, str]]:  # one order for everyone
    return sorted(doc.get("messages", type=pycrdt.Array).to_py(), key=lambda m: m["from"])


async def chat(device: Device, space: bytes, everyone: asyncio.Barrier) -> str:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    async with device.live(space, "chat", doc=doc) as handle:
        await asyncio.wait_for(handle.synced.wait(), 30)
        events = device.changes()  # before posting: no edit of the others is missed
        if device.name in SAYS:  # carol's phone only reads
            message = {"from": device.name, "text": SAYS[device.name]}
            doc.get("messages", type=pycrdt.Array).append(message)  # sent by itself
        async with asyncio.timeout(30):  # woken by live edits, never by polling
            while len(messages(doc)) < len(SAYS):
                await anext(events)  # a RemoteChange (or another event): look again
            await everyone.wait()  # stay online until all have seen all messages
    said = " | ".join(f"{m['from']}: {m['text']}" for m in messages(doc))
    return f"{device.name} sees: {said}"


async def main(relay_url: str, work: Path) -> None:
    alice, bob, carol = [(await Device.create_account(work / name, relay_url, name,
                                                      passphrase=PASSPHRASE))[0]
                         for name in SAYS]
    phone = await Device.add_local(carol, work / "carol-phone", "carol's phone",
                                   passphrase=PASSPHRASE)  # a second device of carol's
    space = await alice.create_space("chat")
    for friend in (bob, carol):  # their account keys, compared with alice beforehand
        await alice.sharing.share(space, friend.account, Role.WRITER)
    for device in (bob, carol, phone):  # each device joins, naming the owner's key
        await device.sharing.join(space, alice.account, "chat")
    async with alice, bob, carol, phone:
        everyone = asyncio.Barrier(4)
        lines = await asyncio.gather(*(chat(d, space, everyone)
                                       for d in (alice, bob, carol, phone)))
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
