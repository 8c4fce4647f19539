"""Helpers for the relay backup tests.

* :class:`Workload`: real devices (encrypted device stores, pycrdt documents,
  real crypto) writing through a relay app in this process over real storage
  (SQLite or PostgreSQL), while backups read the same database from a
  ``sddsf relay backup`` subprocess.
* :func:`sddsf`: the real command line, as a subprocess.
* :class:`MotoS3`: a real S3-compatible server (``moto_server``) on a free
  loopback port, stopped by its process id.
* :func:`dump`: every row of every table, read with plain SQL, to compare a
  source database with the database restored from its backup.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pycrdt
from livekit import free_port, relay_env, write_key_file
from relaykit import make_app

from sddsf.client.device import Device
from sddsf.recovery import enable_backup
from sddsf.relay.storage import open_storage
from sddsf.relay.storage.base import RelayStorage

URL = "http://relay.test"
#: Written by a device into an encrypted document; must never appear in a backup.
SECRET_TEXT = "canary-3f9a1c: the safe code is 0451-7782"  # noqa: S105 - a test canary
#: The device store passphrase; must never appear in a backup either.
PASSPHRASE = "backup test store passphrase 88d1e0"  # noqa: S105 - a test passphrase
DEVICE_NAME = "laptop-of-backup-test"  # metadata: in the registry, in clear
#: The passphrase of the account's passphrase backup (``sddsf backup enable``).
ACCOUNT_PASSPHRASE = "account backup passphrase 5b77c2 for the test"  # noqa: S105
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def policy(work: Path) -> dict[str, str]:
    """A controller policy that never restricts a device (this checks backups)."""
    path = work / "controller-policy.toml"
    path.write_text("[thresholds]\nfull = 0\nread_only = 0\n")
    return {"policy_file": str(path)}


@dataclass
class Workload:
    """Two devices of one account syncing one space through an in-process relay."""

    url: str
    work: Path
    storage: RelayStorage
    app: Any
    devices: list[Device] = field(default_factory=list)
    space: bytes = b""
    written: int = 0
    secret: bytes = b""  # the account secret (never leaves the devices in clear)

    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=self.app)

    async def write(self, n: int, prefix: str = "k") -> None:
        """``n`` ops by the first device, then every device syncs."""
        for _ in range(n):
            self.devices[0].doc(self.space, "kv").get("kv", type=pycrdt.Map)[
                f"{prefix}{self.written}"] = self.written
            self.written += 1
            await self.devices[0].sync()
        for d in self.devices[1:]:
            await d.sync()

    async def snapshot_and_prune(self) -> None:
        """A snapshot and every device's acknowledgement: the relay prunes a prefix."""
        assert await self.devices[0].snapshot(self.space) is not None
        for d in self.devices:
            d.check_every = 0  # the other device corroborates it now: the relay then prunes
        for _ in range(2):
            for d in self.devices:
                await d.sync()


@contextlib.asynccontextmanager
async def workload(work: Path, url: str) -> AsyncIterator[Workload]:
    """A relay (in this process, over ``url``) with an account, two devices with
    passphrase-encrypted stores, one space and :data:`SECRET_TEXT` in it."""
    storage = open_storage(url)
    await storage.open()
    app = make_app(storage, lambda: time.time_ns() // 1_000_000, rate_ip_per_s=10_000.0,
                   rate_ip_burst=10_000.0, **policy(work))
    w = Workload(url, work, storage, app)
    try:
        laptop, w.secret = await Device.create_account(work / "laptop", URL, DEVICE_NAME,
                                                       passphrase=lambda: PASSPHRASE,
                                                       transport=w.transport())
        w.devices.append(laptop)
        # The account's passphrase backup: the relay keeps a wrapped blob and a
        # verifier hash (the "backups" table), both in every relay backup.
        await enable_backup(laptop.relay, laptop.account.account_id, w.secret,
                            ACCOUNT_PASSPHRASE)
        w.space = await laptop.create_space("notes")
        laptop.doc(w.space, "kv").get("kv", type=pycrdt.Map)["secret"] = SECRET_TEXT
        await laptop.sync()
        phone = await Device.add_local(laptop, work / "phone", "phone", passphrase=lambda:
                                       PASSPHRASE, transport=w.transport())
        w.devices.append(phone)
        for d in w.devices:
            d.ack_every = 1
            await d.sync()
        await w.write(4)
        yield w
    finally:
        for d in w.devices:
            await d.close()
        await storage.close()


def key_file(work: Path) -> Path:
    """The relay key of :func:`relaykit.make_app`, as a key file."""
    return write_key_file(work / "relay.key")


def sddsf(*args: str, env: Mapping[str, str] | None = None,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sddsf ARGS`` (clean SDDSF_RELAY_* environment)."""
    proc = subprocess.run([sys.executable, "-m", "sddsf", *args], env=relay_env(env),
                          capture_output=True, text=True, timeout=180, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"sddsf {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def files_of(root: Path) -> Iterator[Path]:
    """Every file under ``root``."""
    return (p for p in sorted(root.rglob("*")) if p.is_file())


# ---------------------------------------------------------------------------- S3


@dataclass
class MotoS3:
    """``moto_server`` on a free loopback port (a real S3 API over HTTP)."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        import boto3

        return boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing",  # noqa: S106
            region_name="us-east-1").client("s3", endpoint_url=self.endpoint)

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str) -> dict[str, bytes]:
        c = self.client()
        out = {}
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                out[item["Key"]] = c.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@contextlib.contextmanager
def moto_s3(work: Path) -> Iterator[MotoS3]:
    """Start ``moto_server`` (a subprocess) and always stop it by its pid."""
    port = free_port()
    log = (work / "moto.log").open("wb")
    env = {**os.environ, **S3_ENV}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env)
    server = MotoS3(proc, port)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                        timeout=0.5):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("moto_server did not start: "
                                     + (work / "moto.log").read_text(errors="replace"))
            time.sleep(0.1)
        yield server
    finally:
        server.stop()
        log.close()


# -------------------------------------------------------------------------- dumps


def _norm(value: Any) -> Any:
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, bool):
        return int(value)
    return value


async def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every relay table except ``schema_migrations``, sorted."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///"):])
        try:
            names = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                "'sqlite_%' AND name <> 'schema_migrations'")]
            tables = {n: conn.execute(f"SELECT * FROM {n}").fetchall()  # noqa: S608
                      for n in names}
        finally:
            conn.close()
    else:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            names = [r[0] for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = "
                "current_schema() AND table_name <> 'schema_migrations'")]
            tables = {n: [tuple(r) for r in await conn.fetch(f"SELECT * FROM {n}")]  # noqa: S608
                      for n in names}
        finally:
            await conn.close()
    return {n: sorted((tuple(_norm(v) for v in row) for row in rows), key=repr)
            for n, rows in sorted(tables.items())}
