"""The network-namespace lab the peer-to-peer tests run devices in.

Real processes in real namespaces: TCP between two namespaces and to the root
namespace (where a relay would run), mDNS's multicast group reaching every other
namespace, a cut namespace unreachable until healed, and nothing left behind.
Every process and wait here is bounded; the lab kills what it started.
"""

from __future__ import annotations

import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netnskit import net_lab, require_netns
from sddsf.errors import UsageError
from sddsf.testing.netns import NetLab

# A TCP server on (argv[1], any port): prints its port, then answers each
# connection with "hello from <address>"; gives up after 20 s without one.
_SERVER = """
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.listen()
print(s.getsockname()[1], flush=True)
s.settimeout(20)
while True:
    c, _ = s.accept()
    c.sendall(b"hello from " + sys.argv[1].encode())
    c.close()
"""

# Connects to (argv[1], argv[2]) within argv[3] s; prints what it was sent.
_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as c:
    print(c.recv(100).decode())
"""

# Joins mDNS's group 224.0.0.251 on port 5353, prints "ready", then the first
# datagram and its sender; gives up after 10 s.
_MDNS_LISTENER = """
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 5353))
group = struct.pack("4s4s", socket.inet_aton("224.0.0.251"), socket.inet_aton("0.0.0.0"))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
s.settimeout(10)
print("ready", flush=True)
data, (sender, _) = s.recvfrom(2048)
print(data.decode(), sender, flush=True)
"""

# Sends one datagram to 224.0.0.251:5353 with TTL 1, as mDNS does.
_MDNS_SENDER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
s.sendto(b"mdns-probe", ("224.0.0.251", 5353))
"""


def _line(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> str:
    """The next line the process prints, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"no output from {proc.args!r} within {timeout} s")
    return proc.stdout.readline().decode().strip()


def _serve(lab: NetLab, i: int) -> int:
    """Start the TCP server in namespace ``i``; its port."""
    server = lab.spawn(i, [sys.executable, "-c", _SERVER, lab.ip(i)], stdout=subprocess.PIPE)
    return int(_line(server))


def _connect(lab: NetLab, i: int, address: str, port: int,
             timeout: float = 2.0) -> subprocess.CompletedProcess[bytes]:
    return lab.run(i, [sys.executable, "-c", _CLIENT, address, str(port), str(timeout)],
                   timeout=timeout + 8)


@pytest.fixture(scope="module")
def lab() -> Iterator[NetLab]:
    with net_lab(3) as made:
        yield made


def test_addresses_follow_the_plan(lab: NetLab) -> None:
    assert lab.subnet.prefixlen == 24
    assert str(lab.subnet).startswith("10.")
    assert lab.host_ip == str(lab.subnet.network_address + 1)
    assert [lab.ip(i) for i in range(3)] == \
        [str(lab.subnet.network_address + k) for k in (2, 3, 4)]
    shown = lab.run(1, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
    assert f"inet {lab.ip(1)}/24" in shown.stdout.decode()
    with pytest.raises(UsageError):
        lab.ip(3)
    with pytest.raises(UsageError):
        lab.cut(-1)


def test_tcp_between_two_namespaces(lab: NetLab) -> None:
    port = _serve(lab, 2)
    done = _connect(lab, 0, lab.ip(2), port)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == f"hello from {lab.ip(2)}"


def test_root_namespace_is_reachable_from_every_namespace(lab: NetLab) -> None:
    # A relay would listen on host_ip in the root namespace.
    server = subprocess.Popen([sys.executable, "-c", _SERVER, lab.host_ip],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        port = int(_line(server))
        for i in range(3):
            done = _connect(lab, i, lab.host_ip, port)
            assert done.stdout.decode().strip() == f"hello from {lab.host_ip}", \
                done.stderr.decode()
    finally:
        server.kill()
        server.wait(timeout=5)


def test_mdns_multicast_reaches_the_other_namespaces(lab: NetLab) -> None:
    listeners = [lab.spawn(i, [sys.executable, "-c", _MDNS_LISTENER], stdout=subprocess.PIPE)
                 for i in (1, 2)]
    for listener in listeners:
        assert _line(listener) == "ready"
    sent = lab.run(0, [sys.executable, "-c", _MDNS_SENDER])
    assert sent.returncode == 0, sent.stderr.decode()
    for listener in listeners:
        assert _line(listener) == f"mdns-probe {lab.ip(0)}"


def test_cut_makes_a_namespace_unreachable_until_healed(lab: NetLab) -> None:
    port = _serve(lab, 1)
    assert _connect(lab, 0, lab.ip(1), port).returncode == 0
    lab.cut(1)
    try:
        cut_off = _connect(lab, 0, lab.ip(1), port, timeout=1.0)
        assert cut_off.returncode != 0
        assert b"TimeoutError" in cut_off.stderr or b"No route to host" in cut_off.stderr
        # ... in both directions, the root namespace included.
        assert _connect(lab, 1, lab.host_ip, 9, timeout=1.0).returncode != 0
    finally:
        lab.heal(1)
    deadline = time.monotonic() + 5
    while (healed := _connect(lab, 0, lab.ip(1), port)).returncode != 0:
        assert time.monotonic() < deadline, healed.stderr.decode()
        time.sleep(0.1)
    assert healed.stdout.decode().strip() == f"hello from {lab.ip(1)}"


def _leftovers(tag: str) -> list[str]:
    """Namespaces and links whose name starts with ``tag``."""
    ip = shutil.which("ip") or "/usr/sbin/ip"
    names = subprocess.run([ip, "netns", "list"], capture_output=True, text=True,
                           timeout=10, check=True).stdout.split()
    links = subprocess.run([ip, "-o", "link", "show"], capture_output=True, text=True,
                           timeout=10, check=True).stdout.splitlines()
    names += [line.split(":")[1].strip().split("@")[0] for line in links]
    return [name for name in names if name.startswith(tag)]


def test_close_removes_everything_even_after_an_error() -> None:
    require_netns()
    with pytest.raises(RuntimeError), net_lab(2) as lab:
        tag = lab.tag
        assert len(_leftovers(tag)) == 2 + 1 + 2  # namespaces, bridge, veth ends
        # A process that started another one: both would keep namespace 1 alive.
        parent = lab.spawn(1, ["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE)
        child = int(_line(parent))
        raise RuntimeError("a test failing inside the lab")
    assert _leftovers(tag) == []
    assert parent.poll() is not None
    assert _ends(child)
    lab.close()  # idempotent
    with pytest.raises(UsageError):
        lab.spawn(0, ["true"])


def _ends(pid: int, timeout: float = 5.0) -> bool:
    """Whether ``pid`` is gone (or a zombie: dead, not yet reaped by init) in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False
