"""Relay backups against the paper's confidentiality claim and the clients' rollback check.

* A backup never holds a plaintext of user data: real devices write known
  plaintext (and hold the account secret, a store passphrase and a passphrase
  backup), and every byte of the backup is searched for each of them, in its
  stored form and (for the unencrypted case) also after decoding every piece.
  A positive control shows the search does find what a backup does hold in
  clear (the device name, from the registry). Encrypted to an operator key,
  not even that metadata is readable.
* Restored under the relay key the devices pinned, a real ``sddsf relay
  serve`` on the restored database serves the devices as before (their pinned
  heads verify; nothing is lost); restored from an OLDER backup, the same
  device refuses the relay with ``log_rollback`` (docs/operations.md 5.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pycrdt
import pytest
from _procs import RELAY_LIMITS, permissive_controller
from backupkit import (
    ACCOUNT_PASSPHRASE,
    DEVICE_NAME,
    PASSPHRASE,
    SECRET_TEXT,
    files_of,
    key_file,
    sddsf,
    workload,
)
from livekit import Relays, free_port

from sddsf.client.device import Device
from sddsf.errors import Code, ProofError
from sddsf.protocol.encoding import decode
from sddsf.protocol.treehead import decode_tree_head
from sddsf.recovery import phrase_from_secret
from sddsf.relay.backup.format import PIECE_LIMITS


def _needles(secret: bytes, devices: list[Device]) -> dict[str, bytes]:
    out = {"the written plaintext": SECRET_TEXT.encode(),
           "its UTF-16 form": SECRET_TEXT.encode("utf-16-le"),
           "the device store passphrase": PASSPHRASE.encode(),
           "the account backup passphrase": ACCOUNT_PASSPHRASE.encode(),
           "the account secret": secret, "the account secret (hex)": secret.hex().encode(),
           "the recovery phrase": phrase_from_secret(secret).encode()}
    for d in devices:
        out[f"{d.name}'s signing seed"] = d.keys.signing.seed
        out[f"{d.name}'s key-agreement seed"] = d.keys.kx.seed
    return out


def _values(value: object) -> list[bytes]:
    """Every byte and text string inside a decoded CBOR value."""
    if isinstance(value, bytes):
        return [value]
    if isinstance(value, str):
        return [value.encode()]
    if isinstance(value, list):
        return [b for v in value for b in _values(v)]
    if isinstance(value, dict):
        return [b for k, v in value.items() for b in _values(k) + _values(v)]
    return []


async def test_backup_never_holds_a_plaintext_of_user_data(tmp_path: Path) -> None:
    src = f"sqlite:///{tmp_path / 'relay.db'}"
    key = key_file(tmp_path)
    pub = sddsf("relay", "backup-keygen", str(tmp_path / "op.key")).stdout.strip()
    async with workload(tmp_path, src) as w:
        await w.snapshot_and_prune()  # a snapshot blob and pruned ops in the database too
        # the devices really hold the plaintext
        assert w.devices[1].doc(w.space, "kv").get("kv", type=pycrdt.Map)["secret"] \
            == SECRET_TEXT
        sddsf("relay", "backup", "--db", src, "--to", str(tmp_path / "plain"), "--key-file",
              str(key))
        sddsf("relay", "backup", "--db", src, "--to", str(tmp_path / "sealed"), "--key-file",
              str(key), "--encrypt-to", pub)
        needles = _needles(w.secret, w.devices)
    plain = list(files_of(tmp_path / "plain"))
    sealed = list(files_of(tmp_path / "sealed"))
    assert len(plain) >= 10 and len(sealed) >= 10
    for path in plain + sealed:
        data = path.read_bytes()
        for what, needle in needles.items():
            assert needle not in data, f"{what} is in {path}"
    # Decoded, piece by piece (the stored form is the plaintext CBOR when not
    # encrypted; this also covers any value split by framing).
    pieces = [decode(p.read_bytes(), limits=PIECE_LIMITS) for p in plain
              if p.name.startswith("p")]
    joined = b"\x00".join(v for piece in pieces for v in _values(piece))
    for what, needle in needles.items():
        assert needle not in joined, f"{what} is in a decoded piece"
    # Positive control: the search finds the metadata a backup does hold in clear.
    assert any(DEVICE_NAME.encode() in p.read_bytes() for p in plain)
    heads = [h for piece in pieces if isinstance(piece, dict) and piece["kind"] == "heads"
             for h in piece["body"]["heads"]]
    assert w.space in {decode_tree_head(h).log for h in heads}
    # Encrypted to the operator key: not even the metadata is readable.
    assert not any(DEVICE_NAME.encode() in p.read_bytes() for p in sealed)
    assert not any(w.space in p.read_bytes() for p in sealed)


async def _kv(device: Device, space: bytes) -> dict[str, object]:
    return dict(device.doc(space, "kv").get("kv", type=pycrdt.Map))


def _set(device: Device, space: bytes, key: str, value: str) -> None:
    device.doc(space, "kv").get("kv", type=pycrdt.Map)[key] = value


def _open(home: Path) -> Device:
    return Device.open(home, passphrase=lambda: PASSPHRASE, transport=httpx.AsyncHTTPTransport())


@dataclass
class Site:
    """One relay address, served in turn by relays on different databases."""

    work: Path
    relays: Relays
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.key = key_file(self.work)
        self.env = {"SDDSF_RELAY_KEY_FILE": str(self.key), **RELAY_LIMITS,
                    **permissive_controller(self.work)}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self, db: str) -> None:
        self.relays.stop_all()
        self.relays.start("--db", f"sqlite:///{self.work / db}", "--port", str(self.port),
                          env=self.env, port=self.port)

    def backup(self, db: str) -> None:  # while the relay serves
        sddsf("relay", "backup", "--db", f"sqlite:///{self.work / db}", "--to",
              str(self.work / "bk"), "--key-file", str(self.key))

    def restore(self, db: str, *extra: str) -> None:
        sddsf("relay", "restore", "--from", str(self.work / "bk"), "--db",
              f"sqlite:///{self.work / db}", "--key-file", str(self.key), *extra)


async def _history(site: Site) -> tuple[bytes, int]:
    """Two devices, two backups; both devices saw exactly what backup 2 holds."""
    site.serve("relay-0.db")
    laptop, _ = await Device.create_account(site.work / "laptop", site.url, "laptop",
                                            passphrase=lambda: PASSPHRASE,
                                            transport=httpx.AsyncHTTPTransport())
    space = await laptop.create_space("notes")
    _set(laptop, space, "a", "1")
    await laptop.sync()
    phone = await Device.add_local(laptop, site.work / "phone", "phone",
                                   passphrase=lambda: PASSPHRASE,
                                   transport=httpx.AsyncHTTPTransport())
    await laptop.sync()
    await phone.sync()
    site.backup("relay-0.db")  # backup 1
    _set(laptop, space, "b", "2")
    await laptop.sync()
    await phone.sync()
    pinned = phone.verified_size(space)
    site.backup("relay-0.db")  # backup 2
    await laptop.close()
    await phone.close()
    return space, pinned


async def test_restored_relay_serves_its_devices_and_an_older_backup_is_a_rollback(
        tmp_path: Path) -> None:
    site = Site(tmp_path, Relays(tmp_path))
    try:
        space, pinned = await _history(site)

        site.restore("relay-1.db")  # the latest backup, under the same relay key
        site.serve("relay-1.db")
        phone, laptop = _open(tmp_path / "phone"), _open(tmp_path / "laptop")
        try:
            await phone.sync()  # verifies the restored log against its pinned head
            assert phone.verified_size(space) == pinned
            assert await _kv(phone, space) == {"a": "1", "b": "2"}
            _set(phone, space, "c", "3")  # and the restored relay takes new ops
            await phone.sync()
            await laptop.sync()
            assert await _kv(laptop, space) == {"a": "1", "b": "2", "c": "3"}
        finally:
            await laptop.close()
            await phone.close()

        site.restore("relay-2.db", "--backup", "1")  # an OLDER backup
        site.serve("relay-2.db")
        phone = _open(tmp_path / "phone")
        try:
            with pytest.raises(ProofError) as info:
                await phone.sync()
            assert info.value.code is Code.LOG_ROLLBACK, info.value
            assert await _kv(phone, space) == {"a": "1", "b": "2", "c": "3"}
        finally:
            await phone.close()
    finally:
        site.relays.stop_all()
