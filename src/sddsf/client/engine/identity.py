"""The device's identity and home: its keys, its account, its relay, its clock.

:class:`DeviceIdentity` reads the ``id`` rows of the device store once (the
device's key seeds and name, the account's public keys, the relay's URL and
pinned key, the hybrid logical clock) and pins the relay's tree-head key on
first contact (trust on first use), refusing any other key later.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sddsf.client.engine.common import as_dict
from sddsf.client.home import open_home
from sddsf.client.keystore import KeyStore, Passphrase
from sddsf.client.store import LocalStore, StoreFactory
from sddsf.client.transport.base import Transport
from sddsf.crypto import Ed25519PublicKey
from sddsf.errors import Code, ConfigError, ProofError
from sddsf.protocol.clock import HLCTimestamp, HybridLogicalClock
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.identity import AccountPublic, DeviceKeys

__all__ = ["DeviceIdentity", "new_home"]


class DeviceIdentity:
    """Who this device is, read from its store (see the module docstring)."""

    def __init__(self, store: LocalStore, key_kind: str, clock: Callable[[], int]) -> None:
        self.store = store
        #: How the store's key is kept (``keyring``, ``passphrase``, ``plaintext``).
        self.key_kind = key_kind
        #: Milliseconds since the epoch.
        self.clock = clock
        ident = as_dict(self.need("id", b"device"))
        acct = as_dict(self.need("id", b"account"))
        relay = as_dict(self.need("id", b"relay"))
        self.keys = DeviceKeys.from_seeds(ident["sign"], ident["kx"])
        self._id_of: DeviceKeys | None = None
        self._device_id = b""
        self.name = str(ident["name"])
        self.account = AccountPublic.from_keys(acct["sign"], acct["recovery"])
        self.relay_url = str(relay["url"])
        self.relay_key = (Ed25519PublicKey.from_bytes(relay["key"])
                          if relay.get("key") else None)
        last = self.store.get("id", b"hlc")
        self.hlc = HybridLogicalClock(
            HLCTimestamp.from_wire(decode(last), what="hlc") if last else None)

    @property
    def device_id(self) -> bytes:
        """This device's id (hashed once per key: every op names it)."""
        keys = self.keys
        if self._id_of is not keys:
            self._id_of, self._device_id = keys, keys.device_id
        return self._device_id

    def need(self, ns: str, key: bytes) -> bytes:
        """A row that every initialised home has.

        Raises:
            ConfigError: it is missing.
        """
        value = self.store.get(ns, key)
        if value is None:
            raise ConfigError(f"the device store lacks {ns}/{key.decode(errors='replace')}; "
                              "was this home initialised?")
        return value

    def reload(self) -> None:
        """Re-read what another process may have changed: the pinned relay key and
        the clock (which only moves forward)."""
        relay = as_dict(self.need("id", b"relay"))
        if relay.get("key"):
            self.relay_key = Ed25519PublicKey.from_bytes(relay["key"])
        last = self.store.get("id", b"hlc")
        if last is not None:
            stored = HLCTimestamp.from_wire(decode(last), what="hlc")
            self.hlc.last = max(self.hlc.last, stored)

    def relay_key_or_raise(self) -> Ed25519PublicKey:
        """The pinned relay key.

        Raises:
            ConfigError: not pinned yet (this device never synced).
        """
        if self.relay_key is None:
            raise ConfigError("the relay key is not pinned yet; sync once while online")
        return self.relay_key

    async def pin(self, transport: Transport) -> None:
        """Pin the relay's key on first contact, and refuse another key later.

        Raises:
            ProofError: ``tree_head_invalid`` when the relay's key changed.
        """
        await transport.spaces()  # a request in a session: the relay identified itself
        rid = transport.relay_id
        if rid is None:
            raise ConfigError("the relay did not identify itself")
        if self.relay_key is None:
            self.relay_key = Ed25519PublicKey.from_bytes(rid)
            self.store.put("id", b"relay", encode({"url": self.relay_url, "key": rid}))
        elif rid != self.relay_key.raw:
            transport.forget_session()  # never reuse a session opened with an impostor
            raise ProofError("the relay's tree-head key changed since this device first "
                             "connected; refusing to trust it", Code.TREE_HEAD_INVALID)

    def set_relay_url(self, url: str, relay_key: bytes) -> None:
        """Store a new URL for this device's relay (it moved). The caller opened a
        session at ``url`` and got ``relay_key``; it must be the pinned key. Takes
        effect when the device is next opened.

        Raises:
            ProofError: ``tree_head_invalid`` when ``relay_key`` is not the pinned key.
        """
        if self.relay_key is not None and relay_key != self.relay_key.raw:
            raise ProofError("the relay at the new URL signs with another key than the "
                             "pinned one", Code.TREE_HEAD_INVALID)
        self.store.put("id", b"relay", encode({"url": url, "key": relay_key}))
        self.relay_url = url
        self.relay_key = Ed25519PublicKey.from_bytes(relay_key)

    def spaces(self) -> list[tuple[bytes, str]]:
        """``(space_id, name)`` of the spaces this device holds keys for."""
        return [(k, str(decode(v))) for k, v in self.store.scan("space")]

    def synced_spaces(self) -> list[tuple[bytes, str]]:
        """:meth:`spaces` without the shared spaces this account no longer reaches
        (removed, or it left: ``gone``): those stay readable here, never synced."""
        gone = {k for k, _ in self.store.scan("gone")}
        return [(s, n) for s, n in self.spaces() if s not in gone]

    def space_label(self, space_id: bytes) -> str:
        """How messages name a space: its name quoted, else a prefix of its id."""
        name = self.store.get("space", space_id)
        label = str(decode(name)) if name is not None else ""
        return repr(label) if label else space_id.hex()[:12]


def new_home(home: Path, keys: DeviceKeys, name: str, account: AccountPublic,
             relay_url: str, passphrase: Passphrase | None,
             insecure_plaintext: bool, *, key_store: KeyStore | None = None,
             store_factory: StoreFactory | None = None) -> LocalStore:
    """Create a device home holding a new identity (the relay key is pinned later);
    ``key_store`` and ``store_factory`` as :func:`sddsf.client.home.open_home`."""
    store, _ = open_home(home, passphrase=passphrase, create=True,
                         insecure_plaintext=insecure_plaintext, key_store=key_store,
                         store_factory=store_factory)
    with store.batch() as b:
        b.put("id", b"device", encode({"sign": keys.signing.seed, "kx": keys.kx.seed,
                                       "name": name}))
        b.put("id", b"account", encode({"sign": account.signing_key.raw,
                                        "recovery": account.recovery_key}))
        b.put("id", b"relay", encode({"url": relay_url, "key": b""}))
    return store
