"""Watch what happens to a device: typed events, with a callback and a stream.

    python examples/observe.py RELAY_URL WORK_DIR   # e.g. http://127.0.0.1:8787 /tmp/obs
"""

import asyncio
import sys
from pathlib import Path

from sddsf import Device, RegistryChange, RemoteChange, Rotation, SddsfError
from sddsf.client.kv import KeyValue

PASSPHRASE = "an example passphrase; ask the user for theirs"  # noqa: S105


def describe(event: object) -> str:
    if isinstance(event, RegistryChange):
        return f"device {event.name!r} {event.change}"
    if isinstance(event, Rotation):
        return f"space moved to key epoch {event.epoch}"
    if isinstance(event, RemoteChange):
        return f"edit of {event.doc!r} ({len(event.update)} bytes)"
    return repr(event)


def broken(event: object) -> None:
    raise RuntimeError("a bug in the application's callback")


async def main(relay_url: str, work: Path) -> None:
    laptop, _ = await Device.create_account(work / "laptop", relay_url, "laptop",
                                            passphrase=PASSPHRASE)
    space = await laptop.create_space("groceries")
    phone = await Device.add_local(laptop, work / "phone", "phone", passphrase=PASSPHRASE)
    async with laptop, phone:
        await phone.sync()
        phone.on_change(lambda event: print("callback:", describe(event)))
        phone.on_error(lambda error: print("reported:", error.message[:40]))
        phone.on_change(broken)  # a callback that raises never stops syncing
        events = phone.changes()
        tablet = await Device.add_local(laptop, work / "tablet", "tablet",
                                        passphrase=PASSPHRASE)
        await tablet.close()
        KeyValue(laptop, space).put("milk", "2 l")
        await laptop.sync()
        report = await phone.sync()
        print("phone applied", report.applied, "edit(s)")
        while (event := await asyncio.wait_for(anext(events), 5)) is not None:
            print("stream:", describe(event))
            if isinstance(event, RemoteChange) and event.doc == "kv":
                break
        print("phone reads milk:", KeyValue(phone, space).entry("milk").value)  # type: ignore[union-attr]


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
    except SddsfError as exc:
        sys.exit(f"error: {exc.message} [{exc.code.value}]")
