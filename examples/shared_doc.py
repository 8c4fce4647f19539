"""Two people edit one shared text offline, at the same time, then sync and converge.

    python examples/shared_doc.py RELAY_URL WORK_DIR   # e.g. http://127.0.0.1:8787 /tmp/doc
"""

import asyncio
import sys
from pathlib import Path

import pycrdt

from sddsf import Device
from sddsf.protocol.membership import Role

PASSPHRASE = "an example passphrase; ask the user for theirs"  # noqa: S105


def text(device: Device, space: bytes) -> pycrdt.Text:
    shared: pycrdt.Text = device.doc(space, "plan").get("text", type=pycrdt.Text)
    return shared


async def main(relay_url: str, work: Path) -> None:
    alice, _ = await Device.create_account(work / "alice", relay_url, "alice",
                                           passphrase=PASSPHRASE)
    bob, _ = await Device.create_account(work / "bob", relay_url, "bob",
                                         passphrase=PASSPHRASE)
    async with alice, bob:
        space = await alice.create_space("plans")
        text(alice, space).insert(0, "Meet at noon by the river.")
        alice.flush()
        # Bob's account key as the two compared it (fingerprint or account code).
        await alice.sharing.share(space, bob.account, Role.WRITER)
        await bob.sharing.join(space, alice.account, "plans")
        print("bob got:", text(bob, space))
        # Both edit without syncing: each device writes to its own copy.
        mine, theirs = text(alice, space), text(bob, space)
        start = str(mine).index("noon")
        del mine[start:start + len("noon")]
        mine.insert(start, "one")
        theirs.insert(0, "Saturday: ")
        alice.flush()
        bob.flush()
        print("alice offline:", mine)
        print("bob offline:", theirs)
        for device in (alice, bob, alice):  # each sends its edit and takes the other's
            await device.sync()
        final = {name: str(text(d, space)) for name, d in (("alice", alice), ("bob", bob))}
        print("alice:", final["alice"])
        print("bob:", final["bob"])
        print("converged:", final["alice"] == final["bob"])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
