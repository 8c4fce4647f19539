"""``sddsf demo``: the main job in one command, narrated.

An embedded relay (a real HTTP server on 127.0.0.1, SQLite in a temporary
directory) and three devices in separate homes, using the same code paths as
the real commands: create the account on a laptop, pair a phone (SPAKE2, a QR
code on a terminal), edit on both and converge (each edit says who made it),
catch a relay that tampers with history, revoke the phone (its writes are
refused and it is no recipient of the new key, so it cannot read what comes
after), share a note with a second person (who joins, edits, and once removed
reads nothing written after), and recover the account on a new tablet from
the recovery secret. The
end says what happened to each device. Each protection is checked: the demo
fails (exit 1) if one does not hold.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pycrdt
import segno
import uvicorn
from rich.console import Console

from sddsf.client import pairing
from sddsf.client.device import Device
from sddsf.client.pairing import PairingCheck, PairingInvite
from sddsf.crypto import Ed25519SigningKey, random_bytes
from sddsf.errors import AuthenticationError, AuthorizationError, ProofError, UsageError
from sddsf.protocol import keypackage as kp
from sddsf.relay.app import create_app
from sddsf.relay.settings import RelaySettings
from sddsf.relay.storage import open_storage

__all__ = ["run_demo"]

_PASS = "demo passphrase (not a real one)"  # noqa: S105 - throw-away demo homes


class _TamperingTransport(httpx.AsyncBaseTransport):
    """A relay that flips one byte of every op it serves, while ``active`` (and
    serves no first-sync bundle then, which a relay need not: the ops go out one
    page at a time, through the flipping)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.active = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.active and request.url.path == "/v1/bootstrap":
            return httpx.Response(404, json={"code": "not_found", "message": "no bundle"})
        response = await self.inner.handle_async_request(request)
        if not (self.active and request.method == "GET" and request.url.path.endswith("/ops")):
            return response
        body = json.loads(await response.aread())
        for op in body["ops"]:
            if op["envelope"]:
                raw = bytearray(base64.urlsafe_b64decode(op["envelope"]))
                raw[-20] ^= 1
                op["envelope"] = base64.urlsafe_b64encode(bytes(raw)).decode()
        return httpx.Response(response.status_code, json=body)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_relay(workdir: Path) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = _free_port()
    settings = RelaySettings(db=f"sqlite:///{workdir / 'relay.db'}", port=port,
                             key_file=str(workdir / "relay.key"))
    app = create_app(settings, open_storage(settings.db),
                     Ed25519SigningKey.from_seed(random_bytes(32)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", ws_max_size=64 * 1024))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline:
            raise UsageError("the embedded relay did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def _kv(device: Device, space: bytes) -> dict[str, object]:
    return dict(device.doc(space, "kv").get("kv", type=pycrdt.Map))


def _edit(say: Console, device: Device, space: bytes, key: str, value: str) -> None:
    device.doc(space, "kv").get("kv", type=pycrdt.Map)[key] = value
    say.print(f"  {device.name} writes {key} = {value!r}")


def _qr(say: Console, uri: str) -> None:
    """The pairing QR code, drawn only on a terminal (a pipe gets the code alone)."""
    if not say.is_terminal:
        return
    out = io.StringIO()
    segno.make(uri, error="m").terminal(out=out, compact=True)
    for line in out.getvalue().splitlines():
        say.out(line, highlight=False)


async def _scenario(say: Console, workdir: Path, url: str) -> None:  # noqa: PLR0915
    def secret_source() -> str:
        return _PASS

    say.print("\n[bold]1. Create the account and a first device (laptop)[/]")
    laptop, secret = await Device.create_account(workdir / "laptop", url, "laptop",
                                                  passphrase=secret_source)
    say.print(f"  account fingerprint  {laptop.account.fingerprint}")
    say.print("  recovery secret      shown once as a 24-word phrase by `sddsf init`")
    space = await laptop.create_space("groceries")

    say.print("\n[bold]2. Pair a second device (phone) with a one-time code[/]")
    invites: asyncio.Queue[PairingInvite] = asyncio.Queue()
    words: list[tuple[str, ...]] = []

    def compare(check: PairingCheck) -> bool:
        words.append(check.words)  # a person compares them; here both sides must agree
        return True

    def show(invite: PairingInvite) -> None:
        qr = "and this QR code" if say.is_terminal else "and a QR code"
        say.print(f"  laptop shows the code  {invite.code}  {qr}; the phone scans it (or "
                  "types the code)")
        _qr(say, invite.uri)
        invites.put_nowait(invite)

    async def phone_joins() -> Device:
        invite = await invites.get()
        return await pairing.join(workdir / "phone", url, invite.code, "phone",
                                  passphrase=secret_source, confirm_sas=compare, poll_s=0.05)

    _, phone = await asyncio.gather(
        pairing.add_device(laptop, show=show, confirm_sas=compare, poll_s=0.05), phone_joins())
    if len(words) != 2 or words[0] != words[1]:
        raise UsageError("demo: the two devices did not derive the same pairing words")
    say.print(f"  both screens show the same words: {' '.join(words[0])}")
    say.print("  SPAKE2 over the relay's mailbox: the laptop signed the phone into the registry "
              "(the phone countersigned) and opened a new key epoch that includes it")
    await laptop.sync()
    await phone.sync()

    say.print("\n[bold]3. Edit offline on both, then sync[/]")
    _edit(say, laptop, space, "milk", "2 l")
    _edit(say, phone, space, "eggs", "12")
    _edit(say, phone, space, "bread", "1")
    say.print("  each edit is a signed op, encrypted under the space key the relay never sees")
    for _ in range(2):
        await laptop.sync()
        await phone.sync()
    if _kv(laptop, space) != _kv(phone, space):
        raise UsageError("demo: the devices did not converge")
    say.print(f"  both devices now hold {_kv(laptop, space)}")

    say.print("\n[bold]4. A relay that tampers with history is caught[/]")
    tamper = _TamperingTransport()
    watcher = await Device.add_local(laptop, workdir / "watcher", "watcher",
                                     passphrase=secret_source, transport=tamper)
    say.print("  a third device (watcher) is added; the relay it talks to flips a byte of "
              "every op it serves")
    before = _kv(watcher, space)
    tamper.active = True
    try:
        await watcher.sync()
    except ProofError as exc:
        say.print(f"  [green]refused[/]: {exc.code.value} - {exc.message}")
    else:
        raise UsageError("demo: tampered history was NOT detected")
    if _kv(watcher, space) != before:
        raise UsageError("demo: tampered data reached the device")
    tamper.active = False
    await watcher.sync()
    say.print(f"  with an honest relay again, the same device syncs: {_kv(watcher, space)}")

    say.print("\n[bold]5. The phone is lost: the laptop revokes it[/]")
    await laptop.revoke(phone.device_id, "phone lost")
    await laptop.revoke(watcher.device_id, "demo device")
    _edit(say, laptop, space, "coffee", "beans")
    await laptop.sync()
    _edit(say, phone, space, "sneaky", "write")
    try:
        await phone.sync()
    except (AuthenticationError, AuthorizationError) as exc:
        say.print(f"  [green]refused[/]: the phone's write ({exc.code.value})")
    else:
        raise UsageError("demo: the revoked phone could still sync")
    newest = (await laptop.refresh_keys(space))[-1]
    try:
        kp.open_epoch_key(newest, phone.device_id, phone.keys.kx)
    except AuthorizationError:
        say.print(f"  [green]refused[/]: the phone cannot read new data: the space moved to "
                  f"key epoch {newest.epoch}, and the phone is not one of its recipients "
                  "(it never sees 'coffee')")
    else:
        raise UsageError("demo: the revoked phone could open the new epoch key")
    if "coffee" in _kv(phone, space):
        raise UsageError("demo: the revoked phone holds data written after its revocation")

    bob = await _share_act(say, workdir, url, laptop)

    say.print("\n[bold]7. Every device lost: recover on a new tablet from the recovery "
              "secret[/]")
    tablet = await Device.recover(workdir / "tablet", url, secret, "tablet",
                                  passphrase=secret_source, revoke_others=True)
    say.print(f"  the tablet reads the whole history: {_kv(tablet, space)}")
    say.print(f"  active devices: {[d.name for d in tablet.registry().active_devices()]}")
    say.print("\n[bold]What happened to each device[/]")
    for name, fate in (
            ("laptop", "made the account, paired the phone, revoked it; revoked in the end "
                       "by the recovery (`recover --revoke-others`)"),
            ("phone", "paired with a code and matching words, edited, then revoked: its "
                      "writes are refused and it has no key for anything written after"),
            ("watcher", "caught the tampering relay (nothing it served was applied); "
                        "revoked"),
            ("bob", "another person: joined the shared note by the owner's fingerprint, "
                    "wrote in it, was removed, and cannot read what came after"),
            ("tablet", "recovered the account from the 24-word phrase; the only active "
                       "device, holding every edit")):
        say.print(f"  {name:<8} {fate}")
    for device in (laptop, phone, watcher, tablet, bob):
        await device.close()


def _note(device: Device, space: bytes) -> str:
    return str(device.doc(space, "note").get("t", type=pycrdt.Text))


async def _share_act(say: Console, workdir: Path, url: str, laptop: Device) -> Device:
    """Act 6: a note shared with another person, who is later removed."""
    say.print("\n[bold]6. Share a note with another person (Bob), then remove him[/]")
    bob, _ = await Device.create_account(workdir / "bob", url, "bob-laptop",
                                         passphrase=lambda: _PASS)
    note = await laptop.create_space("trip")
    laptop.doc(note, "note").get("t", type=pycrdt.Text).insert(0, "Train at 9.")
    await laptop.sync()
    say.print(f"  Bob's account fingerprint {bob.account.fingerprint}: the people compare it")
    await laptop.sharing.share(note, await laptop.sharing.resolve(bob.account.fingerprint))
    await bob.sharing.join(note, await bob.sharing.resolve(laptop.account.fingerprint), "trip")
    bob.doc(note, "note").get("t", type=pycrdt.Text).insert(11, " Bob brings snacks.")
    await bob.sync()
    await laptop.sync()
    if _note(laptop, note) != _note(bob, note):
        raise UsageError("demo: the two people's copies of the note did not converge")
    say.print(f"  both read the note: {_note(laptop, note)!r} (Bob's devices got the key; "
              "the relay still sees only ciphertext)")
    report = await laptop.sharing.remove(note, bob.account.account_id)
    laptop.doc(note, "note").get("t", type=pycrdt.Text).insert(0, "PRIVATE: ")
    await laptop.sync()
    gone = await bob.sync()
    newest = laptop.engine.keyring.stored_packages(note)[-1]
    if note not in gone.unreachable or report.rotated != 1 or bob.device_id in \
            newest.recipients or "PRIVATE" in _note(bob, note):
        raise UsageError("demo: the removed person could still reach the note")
    say.print(f"  [green]removed[/]: the note moved to key epoch {newest.epoch} without Bob's "
              "devices; the relay no longer serves it to him and he never sees 'PRIVATE'")
    return bob


def run_demo(*, quiet: bool = False) -> None:
    """Run the walkthrough; raises :class:`UsageError` if any protection fails."""
    say = Console(quiet=quiet, highlight=False)
    say.print("[bold]SDDSF demo[/]: one account, its devices (laptop, phone, a watcher, then a "
              "tablet), one relay (embedded, SQLite); everything lives in a temporary "
              "directory that is deleted at the end")
    with tempfile.TemporaryDirectory(prefix="sddsf-demo-") as tmp:
        workdir = Path(tmp)
        server, thread, url = _start_relay(workdir)
        say.print(f"  relay listening on {url}")
        try:
            asyncio.run(_scenario(say, workdir, url))
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    say.print("\n[bold green]demo complete: every protection held[/]")
    if quiet:
        print("demo complete: every protection held")
