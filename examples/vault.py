"""The secrets vault: store on one device, read on another, see a conflict kept.

    python examples/vault.py RELAY_URL WORK_DIR   # e.g. http://127.0.0.1:8787 /tmp/vault
"""

import asyncio
import sys
from pathlib import Path

from sddsf import Device
from sddsf.client.vault import Vault

PASSPHRASE = "an example passphrase; ask the user for theirs"  # noqa: S105


async def main(relay_url: str, work: Path) -> None:
    laptop, _ = await Device.create_account(work / "laptop", relay_url, "laptop",
                                            passphrase=PASSPHRASE)
    phone = await Device.add_local(laptop, work / "phone", "phone", passphrase=PASSPHRASE)
    async with laptop, phone:
        mine = await Vault.open(laptop)  # creates the account's vault space
        mine.put("wifi", "password", "correct horse")
        key = mine.generate("signing-key", "ed25519")
        await laptop.sync()
        await phone.sync()
        theirs = await Vault.open(phone, create=False)
        print("phone reads wifi:", theirs.get("wifi").secret)
        print("phone sees the key's public half:", theirs.get("signing-key").public_key
              == key.public_key)
        # Both change the same secret before syncing: neither write is lost.
        mine.put("wifi", "password", "laptop's new password")
        theirs.put("wifi", "password", "phone's new password")
        for device in (laptop, phone, laptop):
            await device.sync()
        item = mine.item("wifi")
        if item is None:
            raise SystemExit("the vault lost an item")
        print("conflict:", item.conflict, sorted(v.secret or "" for v in item.heads))
        mine.resolve("wifi", keep=item.heads[0].id)
        await laptop.sync()
        print("resolved:", not (mine.item("wifi") or item).conflict)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
