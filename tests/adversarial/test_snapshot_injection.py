"""Snapshot injection by a stolen, still active device (protocol.md 18.7;
docs/threat-model.md, "Forged space snapshots").

A device of the account can sign any state as a space snapshot, with the right
frontier and chain heads: the signature says who wrote it, not that its
documents are what the log says. The attacker here holds the phone, which is
still active: it publishes a snapshot whose documents are not the log's
(``FORGED``) and acknowledges everything, so that a relay that prunes under any
snapshot drops the true history.

Every test runs against a real ``sddsf relay serve`` process (SQLite):

* ``recover --revoke-others`` through the real CLI, and through the library
  (also when history is pruned under an earlier, corroborated snapshot), ends
  with the true state and never publishes the forgery again;
* a device that started from the forged snapshot while its author was active
  re-derives its state when the author is revoked, and never publishes it;
* a device that holds the log recomputes the snapshot, reports the author by
  name (an alert, not a crash), and the relay keeps the history under it;
* a signed snapshot whose documents are not Yjs updates is reported and the
  new device replays the log instead of failing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from livekit import RelayProcess, Relays, relay_env, write_key_file

from p2pkit import exchange
from sddsf.client.device import Device, _chain_head
from sddsf.crypto import random_bytes
from sddsf.protocol.snapshot import (
    CORROBORATED_SNAPSHOT_DOC,
    SPACE_SNAPSHOT_DOC,
    seal_snapshot,
    snapshot_claims,
    verify_snapshot,
)
from sddsf.recovery import phrase_from_secret
from sddsf.relay.storage import open_storage

PASS = "correct horse battery staple"  # noqa: S105 - a test passphrase
FORGED = {"a0": "FORGED", "evil": "yes"}
RELAY_ENV = {"SDDSF_RELAY_RATE_IP_PER_S": "100000", "SDDSF_RELAY_RATE_IP_BURST": "100000"}


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    """A real relay process on SQLite in the test's directory."""
    relays = Relays(tmp_path)
    key = write_key_file(tmp_path / "relay.key")
    try:
        yield relays.start("--db", f"sqlite:///{tmp_path / 'relay.db'}",
                           env={**RELAY_ENV, "SDDSF_RELAY_KEY_FILE": str(key)})
    finally:
        relays.stop_all()


def kv(dev: Device, space: bytes) -> dict[str, Any]:
    return dict(dev.doc(space, "kv").get("kv", type=pycrdt.Map))


async def write(dev: Device, space: bytes, prefix: str, n: int) -> None:
    m = dev.doc(space, "kv").get("kv", type=pycrdt.Map)
    for i in range(n):
        m[f"{prefix}{i}"] = f"true {prefix}{i}"
        dev.flush()
    await dev.sync()


async def account(relay: RelayProcess, tmp_path: Path) -> tuple[Device, Device, bytes, bytes]:
    """Laptop (honest) and phone (stolen later), both holding the whole log."""
    laptop, secret = await Device.create_account(tmp_path / "laptop", relay.base_url, "laptop",
                                                 passphrase=None, insecure_plaintext=True)
    space = await laptop.create_space("notes")
    phone = await Device.add_local(laptop, tmp_path / "phone", "phone", passphrase=None,
                                   insecure_plaintext=True)
    for dev in (laptop, phone):
        dev.snapshot_every = 0  # the tests decide when snapshots are written
        dev.check_every = 0  # look for other devices' snapshots at every sync
        await dev.sync()
    return laptop, phone, space, secret


async def forge(thief: Device, space: bytes) -> int:
    """The stolen phone publishes a snapshot of the log it verified, with the
    right frontier and chain heads but documents the log never had, and
    acknowledges everything. Returns the snapshot's size."""
    await thief.sync()
    tree = thief._verified_tree(space)
    keys = thief._keys_cached(space)
    docs = {name: thief.doc(space, name).get_update() for name in ("_meta", "kv")}
    forged: pycrdt.Doc[Any] = pycrdt.Doc()
    forged_kv = forged.get("kv", type=pycrdt.Map)
    for key, value in FORGED.items():
        forged_kv[key] = value
    docs["kv"] = forged.get_update()
    chains = {k[16:]: _chain_head(v) for k, v in thief.store.scan("chain", space)}
    blob = seal_snapshot(thief.keys, space=space, epoch=max(keys), epoch_key=keys[max(keys)],
                         size=tree.size, frontier=tree.frontier(), chains=chains, docs=docs,
                         ts_ms=thief._clock(), nonce=random_bytes(24))
    await thief.relay.put_snapshot(space, SPACE_SNAPSHOT_DOC, tree.size - 1, blob)
    await thief.relay.acknowledge(space, tree.size - 1)
    return tree.size


async def stored_snapshots(relay_db: Path, space: bytes) -> list[bytes]:
    """The whole-space snapshots (current and corroborated copy) the relay stores."""
    storage = open_storage(f"sqlite:///{relay_db}")
    await storage.open()
    try:
        found = [await storage.get_snapshot(space, d)
                 for d in (SPACE_SNAPSHOT_DOC, CORROBORATED_SNAPSHOT_DOC)]
        return [s[1] for s in found if s is not None]
    finally:
        await storage.close()


async def published_kv(reader: Device, space: bytes, blob: bytes) -> dict[str, Any]:
    """The kv document of a stored snapshot, decrypted with the reader's keys."""
    claims = snapshot_claims(blob)
    chunks = [await reader.relay.get_snapshot_chunk(space, c) for c in claims.chunk_ids]
    snap = verify_snapshot(blob, registry=reader.registry(), space=space,
                           epoch_keys=reader._keys_cached(space), chunks=chunks,
                           accept_revoked=True)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(snap.docs["kv"])
    return dict(doc.get("kv", type=pycrdt.Map))


async def first_envelope_kept(relay_db: Path, space: bytes) -> bool:
    storage = open_storage(f"sqlite:///{relay_db}")
    await storage.open()
    try:
        return (await storage.read_ops(space, -1, 1))[0].envelope is not None
    finally:
        await storage.close()


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in relay_env().items() if k not in ("SDDSF_HOME", "SDDSF_DEBUG")}
    env["SDDSF_PASSPHRASE"] = PASS
    return subprocess.run([sys.executable, "-m", "sddsf", "--home", str(home), *args],
                          env=env, cwd=home.parent, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, check=False)


# ------------------------------------------------------------------ recovery


async def test_cli_recover_revoke_others_ends_with_the_true_state(
        relay: RelayProcess, tmp_path: Path) -> None:
    laptop, phone, space, secret = await account(relay, tmp_path)
    await write(laptop, space, "a", 12)
    truth = kv(laptop, space)
    await phone.sync()
    await forge(phone, space)  # the laptop is gone too: nobody checks it before recovery
    phrase = tmp_path / "phrase.txt"
    phrase.write_text(phrase_from_secret(secret) + "\n")
    rescue = tmp_path / "rescue"
    done = cli(rescue, "recover", "--relay", relay.base_url, "--phrase-file", str(phrase),
               "--name", "rescue", "--revoke-others")
    assert done.returncode == 0, done.stderr
    listed = cli(rescue, "ls", "notes", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == truth  # not FORGED: the phone was revoked first
    # The recovered device never publishes the forged state under its own name.
    dev = Device.open(rescue, passphrase=lambda: PASS)
    await dev.sync()
    assert {d.name: d.device_id in {r.device_id for r in dev.registry().active_devices()}
            for d in dev.registry().devices.values()} == {
        "laptop": False, "phone": False, "rescue": True}
    for blob in await stored_snapshots(tmp_path / "relay.db", space):
        published = await published_kv(dev, space, blob)
        assert published == truth or snapshot_claims(blob).author == phone.device_id
    current = (await stored_snapshots(tmp_path / "relay.db", space))[0]
    assert snapshot_claims(current).author == dev.device_id
    assert await published_kv(dev, space, current) == truth
    for d in (laptop, phone, dev):
        await d.close()


async def test_library_recover_after_history_was_pruned_under_a_corroborated_snapshot(
        relay: RelayProcess, tmp_path: Path) -> None:
    laptop, phone, space, secret = await account(relay, tmp_path)
    await write(laptop, space, "a", 10)
    assert await laptop.snapshot(space) is not None
    await phone.sync()  # holds the log: recomputes the laptop's snapshot, attests it
    await laptop.sync()
    await phone.sync()  # both acknowledged: the relay prunes under the snapshot
    assert not await first_envelope_kept(tmp_path / "relay.db", space)
    await write(laptop, space, "b", 6)
    truth = kv(laptop, space)
    await forge(phone, space)
    rescue = await Device.recover(tmp_path / "rescue", relay.base_url, secret, "rescue",
                                  passphrase=None, insecure_plaintext=True, revoke_others=True)
    # Started from the laptop's corroborated snapshot and the log after it; the
    # phone's snapshot was never used (its author is revoked, nobody vouched).
    assert kv(rescue, space) == truth
    for blob in await stored_snapshots(tmp_path / "relay.db", space):
        if snapshot_claims(blob).author == rescue.device_id:
            assert await published_kv(rescue, space, blob) == truth
    assert not rescue.registry().is_active(phone.device_id)
    for d in (laptop, phone, rescue):
        await d.close()


# --------------------------------------------- a device that loaded the forgery


async def test_device_that_loaded_a_forged_snapshot_rederives_when_its_author_is_revoked(
        relay: RelayProcess, tmp_path: Path) -> None:
    laptop, phone, space, _ = await account(relay, tmp_path)
    await write(laptop, space, "a", 12)
    truth = kv(laptop, space)
    await forge(phone, space)
    # A new device starts from the phone's snapshot while the phone is active.
    tablet = await Device.add_local(laptop, tmp_path / "tablet", "tablet", passphrase=None,
                                    insecure_plaintext=True)
    tablet.snapshot_every = 1
    report = await tablet.sync()
    assert report.snapshots_loaded == 1
    assert kv(tablet, space) == FORGED  # the attack's effect, for now
    # Resting on one device's word, it never signs that state itself.
    assert await tablet.snapshot(space) is None
    assert snapshot_claims((await stored_snapshots(tmp_path / "relay.db", space))[0]
                           ).author == phone.device_id
    await laptop.revoke(phone.device_id, "stolen")
    report = await tablet.sync()
    assert kv(tablet, space) == truth
    assert space in report.rederived
    assert any(code == "snapshot_mismatch" and "'phone'" in message
               for code, message in report.alerts), report.alerts
    for d in (laptop, phone, tablet):
        await d.close()


async def test_a_rederived_state_keeps_the_ops_learnt_from_peers(
        relay: RelayProcess, tmp_path: Path) -> None:
    # As above, and the tablet also holds an edit of the laptop that reached it from
    # a peer only (not logged yet): rebuilding the state from the log keeps it, now
    # and once the laptop logs it.
    laptop, phone, space, _ = await account(relay, tmp_path)
    await write(laptop, space, "a", 12)
    await forge(phone, space)
    tablet = await Device.add_local(laptop, tmp_path / "tablet", "tablet", passphrase=None,
                                    insecure_plaintext=True)
    assert (await tablet.sync()).snapshots_loaded == 1
    await laptop.revoke(phone.device_id, "stolen")
    laptop.doc(space, "kv").get("kv", type=pycrdt.Map)["peer"] = "from a peer"
    laptop.flush()  # not pushed: the tablet hears of it from the laptop directly
    assert exchange(tablet, laptop, space).applied >= 1
    report = await tablet.sync()
    assert space in report.rederived
    assert kv(tablet, space).get("peer") == "from a peer"
    await laptop.sync()  # logged now
    await tablet.sync()
    assert kv(tablet, space) == kv(laptop, space) and kv(laptop, space)["peer"] == "from a peer"
    for d in (laptop, phone, tablet):
        await d.close()


async def test_device_holding_the_log_reports_the_forger_and_history_is_kept(
        relay: RelayProcess, tmp_path: Path) -> None:
    laptop, phone, space, _ = await account(relay, tmp_path)
    await write(laptop, space, "a", 12)
    truth = kv(laptop, space)
    await forge(phone, space)
    await laptop.close()  # the laptop's next session looks at the relay's snapshot
    laptop = Device.open(tmp_path / "laptop", passphrase=None)
    report = await laptop.sync()  # recomputes the phone's snapshot from its log
    assert any(code == "snapshot_mismatch" and "'phone'" in message
               for code, message in report.alerts), report.alerts
    # Every active device acknowledged, yet nothing is pruned under the forgery.
    size = laptop._verified_tree(space).size
    for dev in (laptop, phone):
        await dev.relay.acknowledge(space, size - 1)
    assert await first_envelope_kept(tmp_path / "relay.db", space)
    # The laptop replaced it with its own snapshot: new devices get the truth.
    watch = await Device.add_local(laptop, tmp_path / "watch", "watch", passphrase=None,
                                   insecure_plaintext=True)
    await watch.sync()
    assert kv(watch, space) == truth
    assert kv(laptop, space) == truth
    for d in (laptop, phone, watch):
        await d.close()


async def test_signed_snapshot_that_is_not_yjs_is_reported_and_replaced_by_replay(
        relay: RelayProcess, tmp_path: Path) -> None:
    laptop, phone, space, _ = await account(relay, tmp_path)
    await write(laptop, space, "a", 5)
    truth = kv(laptop, space)
    await phone.sync()
    tree, keys = phone._verified_tree(space), phone._keys_cached(space)
    chains = {k[16:]: _chain_head(v) for k, v in phone.store.scan("chain", space)}
    blob = seal_snapshot(phone.keys, space=space, epoch=max(keys), epoch_key=keys[max(keys)],
                         size=tree.size, frontier=tree.frontier(), chains=chains,
                         docs={"kv": b"not a yjs update"}, ts_ms=phone._clock(),
                         nonce=random_bytes(24))
    await phone.relay.put_snapshot(space, SPACE_SNAPSHOT_DOC, tree.size - 1, blob)
    watch = await Device.add_local(laptop, tmp_path / "watch", "watch", passphrase=None,
                                   insecure_plaintext=True)
    report = await watch.sync()
    assert kv(watch, space) == truth
    assert report.snapshots_loaded == 0
    assert any(code == "snapshot_mismatch" and "'phone'" in message
               for code, message in report.alerts), report.alerts
    for d in (laptop, phone, watch):
        await d.close()
