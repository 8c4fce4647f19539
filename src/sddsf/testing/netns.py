"""Linux network namespaces joined by a bridge: one "device" per namespace.

:class:`NetLab` builds a small LAN out of network namespaces, so tests can run
several devices as separate processes with their own addresses, discover each
other by multicast (mDNS), reach a process in the root namespace (a relay), and
lose the network one device at a time (:meth:`NetLab.cut`). It needs root and
iproute2's ``ip``; :func:`netns_available` says whether this machine can.

Address plan (one /24 per lab)::

    10.X.Y.0/24      the lab's subnet: the first /24 of 10.100.0.0 - 10.254.255.0,
                     searching from a start derived from the pid, that no address
                     or route of the root namespace overlaps (so neither another
                     lab nor a real network of the machine)
    10.X.Y.1         the root namespace, on the bridge       (NetLab.host_ip)
    10.X.Y.(i + 2)   namespace i, on its eth0                (NetLab.ip(i))
    224.0.0.0/4      routed to eth0 in every namespace, so multicast can be sent

A namespace has no default route: an address outside the lab is unreachable
there at once (ENETUNREACH), so nothing a test runs in the lab sends traffic
beyond it.

Names, all beginning with the lab's *tag* = prefix + the pid in base 36 (5
characters) + a per-process sequence number (1 character), so that labs of
parallel processes, and several labs of one process, never collide::

    <tag>-<i>        namespace i
    <tag>br          the bridge, in the root namespace
    <tag>v<i>        namespace i's veth end on the bridge (i in base 36);
                     its peer inside namespace i is eth0

Link names are limited to 15 characters, hence the short prefix (at most 7).

The bridge floods multicast to every port: multicast snooping is off (with it
on, a group nobody queried for could be dropped), STP is off and the forward
delay is 0 (a port forwards as soon as it is up).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

from sddsf.errors import Code, UnavailableError, UsageError

__all__ = ["MAX_NAMESPACES", "NetLab", "netns_available"]

#: The most namespaces one lab holds (the index is one base-36 character).
MAX_NAMESPACES: Final = 36
#: Every ``ip`` command is bounded by this (they take milliseconds).
IP_TIMEOUT_S: Final = 10.0
#: How long a spawned process has to exit after SIGTERM before SIGKILL.
TERM_GRACE_S: Final = 2.0

_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,6}$")
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_SEQUENCE = itertools.count()
# The candidate subnets 10.X.Y.0/24, X in 100..254: far from the low 10.x
# ranges that real networks tend to use; any overlap is skipped anyway.
_FIRST_X, _LAST_X = 100, 254
_CANDIDATES = (_LAST_X - _FIRST_X + 1) * 256
_LOCK_FILE = "sddsf-netlab.lock"
_MULTICAST = "224.0.0.0/4"


def _base36(value: int, width: int) -> str:
    digits = ""
    for _ in range(width):
        value, digit = divmod(value, 36)
        digits = _BASE36[digit] + digits
    return digits


def _ip_binary() -> str | None:
    # /usr/sbin is often missing from a non-login PATH; iproute2 installs there.
    return shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.access(p, os.X_OK)), None)


def _run_ip(ip: str, *args: str) -> str:
    """Run ``ip ARGS`` (bounded) and return its output.

    Raises:
        UnavailableError: it failed (the message has its stderr), or it did not
            finish within :data:`IP_TIMEOUT_S` (code ``request_timeout``).
    """
    try:
        done = subprocess.run(  # noqa: S603 - iproute2 with arguments this module builds
            [ip, *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise UnavailableError(f"'ip {' '.join(args)}' did not finish within {IP_TIMEOUT_S} s",
                               Code.REQUEST_TIMEOUT) from exc
    if done.returncode != 0:
        raise UnavailableError(f"'ip {' '.join(args)}' failed: {done.stderr.strip()}")
    return done.stdout


def netns_available() -> str | None:
    """Whether :class:`NetLab` can run here, found by trying.

    Creates and deletes a throwaway namespace, a veth pair into it and a bridge
    (the three things a lab is made of).

    Returns:
        None when it can; else the reason, for a person (not root, no ``ip``,
        or what the kernel answered, such as "Operation not permitted").
    """
    if os.geteuid() != 0:
        return "this process is not root"
    ip = _ip_binary()
    if ip is None:
        return "the 'ip' command (Debian's iproute2) is not installed"
    tag = f"sddsfp{_base36(os.getpid(), 5)}"  # 11 characters; its links 12 (at most 15)
    try:
        _run_ip(ip, "netns", "add", tag)
        try:
            _run_ip(ip, "link", "add", f"{tag}v", "type", "veth", "peer", "name", "eth0",
                    "netns", tag)
            _run_ip(ip, "link", "add", f"{tag}b", "type", "bridge")
        finally:
            for args in (("link", "del", f"{tag}v"), ("link", "del", f"{tag}b"),
                         ("netns", "del", tag)):
                with contextlib.suppress(UnavailableError):
                    _run_ip(ip, *args)
    except UnavailableError as exc:
        return exc.message
    return None


def _occupied_networks(ip: str) -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the root namespace has an address in or a route to."""
    found: list[ipaddress.IPv4Network] = []
    for entry in json.loads(_run_ip(ip, "-j", "-4", "addr", "show") or "[]"):
        for info in entry.get("addr_info", []):
            found.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}",
                                               strict=False))
    for route in json.loads(_run_ip(ip, "-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = route.get("dst", "default")
        if dst != "default":
            found.append(ipaddress.IPv4Network(dst, strict=False))
    return found


def _free_subnet(ip: str) -> ipaddress.IPv4Network:
    """A 10.X.Y.0/24 that nothing in the root namespace overlaps (the caller
    holds the lab lock until its bridge has an address in it).

    Raises:
        UnavailableError: every candidate is taken.
    """
    occupied = _occupied_networks(ip)
    start = os.getpid() % _CANDIDATES
    for step in range(_CANDIDATES):
        index = (start + step) % _CANDIDATES
        x, y = _FIRST_X + index // 256, index % 256
        candidate = ipaddress.IPv4Network(f"10.{x}.{y}.0/24")
        if not any(candidate.overlaps(net) for net in occupied):
            return candidate
    raise UnavailableError("no free 10.x.y.0/24 subnet is left for a network lab")


@contextlib.contextmanager
def _lab_lock(timeout_s: float) -> Iterator[None]:
    """An exclusive lock, across processes, on choosing a lab's subnet."""
    path = Path(tempfile.gettempdir()) / _LOCK_FILE
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UnavailableError(f"another network lab held {path} for "
                                           f"{timeout_s} s", Code.REQUEST_TIMEOUT) from None
                time.sleep(0.01)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class NetLab:
    """``n`` network namespaces on one bridge (see the module docstring).

    Use as ``with NetLab(3) as lab:``; :meth:`close` (run on leaving the block,
    at interpreter exit, and by the constructor itself when it fails part way)
    kills what the lab's namespaces run and deletes every namespace and link
    the lab made.

    Args:
        n: how many namespaces, 1 to :data:`MAX_NAMESPACES`.
        prefix: the start of every name the lab makes: a lowercase letter,
            then at most 6 lowercase letters or digits.

    Raises:
        UsageError: ``n`` or ``prefix`` is out of range.
        UnavailableError: an ``ip`` command failed or timed out (nothing of the
            lab is left behind); :func:`netns_available` says why, usually.
    """

    def __init__(self, n: int, prefix: str = "sddsf") -> None:
        if not 1 <= n <= MAX_NAMESPACES:
            raise UsageError(f"a network lab has 1 to {MAX_NAMESPACES} namespaces, not {n}")
        if not _PREFIX.match(prefix):
            raise UsageError(f"prefix {prefix!r} must be a lowercase letter then at most 6 "
                             "lowercase letters or digits (link names are at most 15 characters)")
        ip = _ip_binary()
        if ip is None:
            raise UnavailableError("the 'ip' command (Debian's iproute2) is not installed")
        self._ip_bin = ip
        self.n = n
        self.tag = f"{prefix}{_base36(os.getpid(), 5)}{_BASE36[next(_SEQUENCE) % 36]}"
        self.bridge = f"{self.tag}br"
        self._subnet: ipaddress.IPv4Network | None = None
        self._namespaces: list[str] = []   # created so far: what close() deletes
        self._links: list[str] = []        # root-namespace links created so far
        self._procs: list[subprocess.Popen[bytes]] = []
        self._closed = False
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ set-up

    def _ip(self, *args: str) -> str:
        return _run_ip(self._ip_bin, *args)

    def _build(self) -> None:
        with _lab_lock(IP_TIMEOUT_S):
            self._subnet = _free_subnet(self._ip_bin)
            self._ip("link", "add", self.bridge, "type", "bridge", "forward_delay", "0",
                     "stp_state", "0", "mcast_snooping", "0")
            self._links.append(self.bridge)
            # Inside the lock: once the bridge has its address, its route marks
            # the subnet taken for every other lab.
            self._ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        # Set at creation too; written again so that a kernel or iproute2 that
        # ignored the option cannot leave snooping on unnoticed.
        snooping = Path(f"/sys/class/net/{self.bridge}/bridge/multicast_snooping")
        try:
            snooping.write_text("0\n")
        except OSError as exc:
            raise UnavailableError(f"cannot turn multicast snooping off on {self.bridge}: "
                                   f"{exc.strerror}") from exc
        self._ip("link", "set", self.bridge, "multicast", "on", "up")
        for i in range(self.n):
            self._add_namespace(i)

    def _add_namespace(self, i: int) -> None:
        ns, veth = self.ns(i), self._veth(i)
        self._ip("netns", "add", ns)
        self._namespaces.append(ns)
        self._ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self._links.append(veth)
        self._ip("link", "set", veth, "master", self.bridge, "multicast", "on", "up")
        self._ip("-n", ns, "link", "set", "lo", "up")
        self._ip("-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0")
        self._ip("-n", ns, "link", "set", "eth0", "multicast", "on", "up")
        # Without a default route, sending to a group needs a route for it
        # (else ENETUNREACH); it stays while the link is cut (marked linkdown).
        self._ip("-n", ns, "route", "add", _MULTICAST, "dev", "eth0")

    # ------------------------------------------------------------------- names

    def _check(self, i: int) -> None:
        if not 0 <= i < self.n:
            raise UsageError(f"namespace index {i} is outside this lab's 0..{self.n - 1}")

    def _veth(self, i: int) -> str:
        return f"{self.tag}v{_BASE36[i]}"

    def ns(self, i: int) -> str:
        """The name of namespace ``i`` (for ``ip netns exec``).

        Raises:
            UsageError: ``i`` is not in ``0..n-1``.
        """
        self._check(i)
        return f"{self.tag}-{i}"

    def ip(self, i: int) -> str:
        """The IPv4 address of namespace ``i`` (on its eth0).

        Raises:
            UsageError: ``i`` is not in ``0..n-1``.
        """
        self._check(i)
        return str(self.subnet.network_address + i + 2)

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        """The lab's 10.X.Y.0/24."""
        if self._subnet is None:
            raise UsageError("this network lab has no subnet (its set-up failed)")
        return self._subnet

    @property
    def host_ip(self) -> str:
        """The root namespace's address on the bridge, reachable from every namespace."""
        return str(self.subnet.network_address + 1)

    # ----------------------------------------------------------------- running

    def _exec_argv(self, i: int, argv: Sequence[str]) -> list[str]:
        if not argv:
            raise UsageError("an empty command cannot run in a namespace")
        return [self._ip_bin, "netns", "exec", self.ns(i), *argv]

    def spawn(self, i: int, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              stdout: int | IO[Any] | None = None,
              stderr: int | IO[Any] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` in namespace ``i``; :meth:`close` kills it if it still runs.

        ``ip netns exec`` replaces itself with ``argv``, so the returned process
        is the program itself (its pid is the program's).

        Args:
            i: the namespace.
            argv: the program and its arguments (found on ``env``'s PATH).
            env: its whole environment (default: this process's).
            stdout: as for :class:`subprocess.Popen` (default: inherited).
            stderr: as for :class:`subprocess.Popen` (default: inherited).

        Returns:
            The started process (stdin is /dev/null).

        Raises:
            UsageError: ``i`` is out of range, ``argv`` is empty, or the lab is closed.
        """
        if self._closed:
            raise UsageError("this network lab is closed")
        proc = subprocess.Popen(  # noqa: S603 - the caller's own test program
            self._exec_argv(i, argv), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
            env=None if env is None else dict(env))
        self._procs.append(proc)
        return proc

    def run(self, i: int, argv: Sequence[str], *,
            timeout: float = 10.0) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` in namespace ``i`` to completion, capturing its output.

        Args:
            i: the namespace.
            argv: the program and its arguments.
            timeout: seconds before it is killed.

        Returns:
            Its exit code, stdout and stderr (a non-zero code is not an error here).

        Raises:
            UsageError: ``i`` is out of range, ``argv`` is empty, or the lab is closed.
            UnavailableError: it ran longer than ``timeout`` (code
                ``request_timeout``); it was killed.
        """
        if self._closed:
            raise UsageError("this network lab is closed")
        try:
            return subprocess.run(  # noqa: S603 - the caller's own test program
                self._exec_argv(i, argv), stdin=subprocess.DEVNULL, capture_output=True,
                timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise UnavailableError(f"{list(argv)!r} in {self.ns(i)} did not finish within "
                                   f"{timeout} s", Code.REQUEST_TIMEOUT) from exc

    # -------------------------------------------------------------- partitions

    def cut(self, i: int) -> None:
        """Take namespace ``i`` off the LAN: its port on the bridge goes down.

        Inside, eth0 loses its carrier; its address and routes stay (marked
        linkdown), so programs see no error of their own, only silence, as when
        a device's network drops. Idempotent.

        Raises:
            UsageError: ``i`` is out of range.
            UnavailableError: ``ip`` failed.
        """
        self._check(i)
        self._ip("link", "set", self._veth(i), "down")

    def heal(self, i: int) -> None:
        """Put namespace ``i`` back on the LAN (undoes :meth:`cut`). Idempotent.

        Raises:
            UsageError: ``i`` is out of range.
            UnavailableError: ``ip`` failed.
        """
        self._check(i)
        self._ip("link", "set", self._veth(i), "up")

    # ----------------------------------------------------------------- closing

    def close(self) -> None:
        """Kill what runs in the lab, then delete its links and namespaces.

        Spawned processes get SIGTERM, then SIGKILL after :data:`TERM_GRACE_S`;
        any other process left in a lab namespace (one a spawned process
        started) gets SIGKILL, since it would keep the namespace alive. Safe to
        call more than once.

        Raises:
            UnavailableError: something could not be deleted (everything else
                was still tried).
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for proc in self._procs:
            _stop(proc)
        failures: list[str] = []
        for ns in self._namespaces:
            self._kill_rest(ns)
        # Deleting the root end of a veth deletes both ends at once, whatever
        # still runs in the namespace; the bridge goes last of the links.
        for link in [*self._links[1:], *self._links[:1]]:
            failures += self._delete("link", "del", link)
        for ns in self._namespaces:
            failures += self._delete("netns", "del", ns)
        if failures:
            raise UnavailableError("network lab clean-up failed: " + "; ".join(failures))

    def _kill_rest(self, ns: str) -> None:
        with contextlib.suppress(UnavailableError):
            for pid in self._ip("netns", "pids", ns).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)

    def _delete(self, *args: str) -> list[str]:
        try:
            self._ip(*args)
        except UnavailableError as exc:
            if "Cannot find device" in exc.message or "No such file" in exc.message:
                return []  # already gone
            return [exc.message]
        return []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after the grace period; always reaped."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=TERM_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=TERM_GRACE_S)
