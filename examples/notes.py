"""Two devices of one account edit a text document live.

    python examples/notes.py RELAY_URL WORK_DIR   # e.g. http://127.0.0.1:8787 /tmp/notes
"""

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pycrdt

from sddsf import Device, Event, RemoteChange

PASSPHRASE = "an example passphrase; ask the user for theirs"  # noqa: S105


async def next_edit(events: AsyncIterator[Event], doc: str) -> RemoteChange:
    async for event in events:
        if isinstance(event, RemoteChange) and event.doc == doc:
            return event
    raise RuntimeError("the event stream ended")


async def main(relay_url: str, work: Path) -> None:
    laptop, _ = await Device.create_account(work / "laptop", relay_url, "laptop",
                                            passphrase=PASSPHRASE)
    space = await laptop.create_space("notes")
    phone = await Device.add_local(laptop, work / "phone", "phone", passphrase=PASSPHRASE)
    my_doc: pycrdt.Doc[Any] = pycrdt.Doc()  # the application's own document
    async with laptop, phone, laptop.live(space, "todo", doc=my_doc) as a, \
            phone.live(space, "todo") as b:
        await a.synced  # both caught up with the relay
        await b.synced
        on_phone, on_laptop = phone.changes(), laptop.changes()
        my_doc.get("text", type=pycrdt.Text).insert(0, "buy milk")  # pushed by itself
        edit = await asyncio.wait_for(next_edit(on_phone, "todo"), 30)
        print(f"phone: an edit of {edit.doc!r} by device {edit.author_device.hex()[:12]}")
        b.doc.get("text", type=pycrdt.Text).insert(8, ", call mum")
        await asyncio.wait_for(next_edit(on_laptop, "todo"), 30)
        print("laptop sees:", my_doc.get("text", type=pycrdt.Text))
        print("phone sees: ", b.doc.get("text", type=pycrdt.Text))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
