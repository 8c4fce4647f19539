"""The relay client's HTTP client: made at the first request (offline work
makes none), one TLS trust store per process, and certificates still checked
(a real TLS server on loopback)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pycrdt
import pytest
from clientkit import InProcessRelay, passphrase
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sddsf.client.device import Device
from sddsf.client.relay_client import RelayClient
from sddsf.client.retry import RetryPolicy
from sddsf.errors import UnavailableError, UsageError


def _count_trust_store_loads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record every load of CA certificates into an SSL context in this process."""
    loads: list[object] = []
    original = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loads.append(args or kwargs)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    return loads


async def test_relay_clients_share_one_trust_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # Loading the CA bundle took about 20 ms per client (most of a device's
    # open): a process with several devices, or one reopening its device, paid
    # it every time.
    first = RelayClient("https://relay.example")
    loads = _count_trust_store_loads(monkeypatch)
    clients = [RelayClient("https://relay.example") for _ in range(3)]
    assert loads == []
    for c in (first, *clients):
        await c.aclose()


def _count_http_clients(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    made: list[object] = []
    original = httpx.AsyncClient.__init__

    def counted(self: httpx.AsyncClient, *args: object, **kwargs: object) -> None:
        made.append(kwargs.get("base_url"))
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(httpx.AsyncClient, "__init__", counted)
    return made


async def test_offline_work_makes_no_http_client(relay: InProcessRelay, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The first HTTP client of a process costs about 100 ms (httpx's connection
    # code and the trust store): the CLI's get, ls and put, which work offline,
    # paid it on every run.
    laptop, _ = await relay.new_account(tmp_path / "laptop")
    space = await laptop.create_space("notes")
    await laptop.close()
    made = _count_http_clients(monkeypatch)
    device = Device.open(tmp_path / "laptop", passphrase=passphrase,
                         transport=relay.transport())
    device.doc(space, "kv").get("kv", type=pycrdt.Map)["k"] = "offline"
    assert device.flush() == 1
    await device.close()
    assert made == []
    device = Device.open(tmp_path / "laptop", passphrase=passphrase,
                         transport=relay.transport())
    report = await device.sync()  # the first request makes it
    assert report.pushed >= 1  # the offline edit (and the space's first ops)
    assert len(made) == 1
    await device.close()


async def test_a_closed_relay_client_refuses_requests() -> None:
    client = RelayClient("http://127.0.0.1:9")
    await client.aclose()
    with pytest.raises(UsageError, match="closed"):
        await client.limits()


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://127.0.0.1:8000/",
                                 "https://relay.example/base", "https://relay.example/base/",
                                 "http://[::1]:80", "https://relay.example:8443/a/b?x=1"])
def test_the_base_url_is_the_one_httpx_would_keep(url: str) -> None:
    assert RelayClient(url).base_url == str(httpx.AsyncClient(base_url=url).base_url)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
async def untrusted_tls_server(tmp_path: Path) -> AsyncIterator[tuple[str, list[bytes]]]:
    """An HTTPS server on loopback whose certificate no trust store holds; it
    records any bytes a client sends after the handshake."""
    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            received.append(await reader.read(65536))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: 2\r\nconnection: close\r\n\r\n{}")
            await writer.drain()
        except (ssl.SSLError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"https://127.0.0.1:{port}", received


async def test_an_https_relay_with_an_untrusted_certificate_is_refused(
        untrusted_tls_server: tuple[str, list[bytes]]) -> None:
    url, received = untrusted_tls_server
    # Shared trust store or not, every client checks the relay's certificate.
    for _ in range(2):
        client = RelayClient(url, retry=RetryPolicy(attempts=1))
        with pytest.raises(UnavailableError, match="TLS certificate is not trusted"):
            await client.limits()
        await client.aclose()
    assert received == []  # no request left the client
