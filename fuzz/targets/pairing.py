"""Pairing: the mailbox messages (:func:`sddsf.protocol.pairing.open_message`),
the pairing code, SPAKE2's peer message, and every field each side reads
from the other's messages (as :mod:`sddsf.client.pairing` reads them).

Input: one byte picks the message type (pake, reveal, offer, cosign, done,
commit) and the mode; the rest is either the whole mailbox message (``raw``)
or, in ``sealed`` mode, the plaintext a peer holding the channel keys sealed, so
the payload readers see fuzzed values behind a valid box. Raw ``pake`` inputs
are also read as a pairing code and as a pairing link.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache

from fuzz.contract import attempt
from fuzz.targets import Target
from fuzz.world import world
from sddsf.client import pairing as client
from sddsf.crypto import Ed25519PublicKey, Spake2, aead_encrypt
from sddsf.protocol import labels
from sddsf.protocol import pairing as pp
from sddsf.protocol import registry as reg
from sddsf.protocol.encoding import encode
from sddsf.protocol.identity import AccountPublic, DevicePublic
from sddsf.protocol.labels import labelled
from sddsf.testing import vectorgen

_KINDS = ("pake", "reveal", "offer", "cosign", "done", "commit")
_PASSWORD = b"fuzz!!"
_NONCE = bytes(range(24))
_COMMIT_NONCE = bytes(range(32))
_JOINER_MSG = b"joiner message"


@cache
def _keys() -> tuple[pp.PairingKeys, pp.PairingKeys]:
    """(initiator, joiner) channel keys of one deterministic exchange."""
    key, m_i = vectorgen.seed("fuzz/pairing"), b"initiator message"
    committed = pp.commitment(_JOINER_MSG, _COMMIT_NONCE)

    def keys(role: str) -> pp.PairingKeys:
        return pp.pairing_keys(role, key, channel_id=bytes(16), commitment=committed,
                               initiator_msg=m_i, joiner_msg=_JOINER_MSG,
                               wordlist=client.WORDS)
    return keys("initiator"), keys("joiner")


@cache
def _offer_body() -> bytes:
    """The add entry body the initiator (laptop) offers for the joiner (newcomer)."""
    w = world()
    s = w.state
    return reg.build_body(reg.EntryType.ADD, account_id=s.account_id, seq=s.seq + 1,
                          prev=s.head, ts_ms=w.now_ms, signer_id=w.laptop.device_id,
                          fields={"device": reg.device_fields(w.newcomer.public, "new")})


def _pake(msg: bytes) -> None:
    outer, _ = pp.open_message(msg, "pake", None, clear=("m",))
    peer = outer.bytes_("m", max_size=64)
    Spake2("initiator", _PASSWORD, id_a=client._ID_A, id_b=client._ID_B).finish(peer)


def _commit(msg: bytes) -> None:  # read by the initiator
    pp.open_message(msg, "commit", None, clear=("h",))[0].bytes_("h", size=32)


def _reveal(msg: bytes) -> None:  # read by the initiator
    outer, _ = pp.open_message(msg, "reveal", None, clear=("m", "n", "c", "box"))
    attempt(pp.check_commitment, pp.commitment(_JOINER_MSG, _COMMIT_NONCE),
            outer.bytes_("m", max_size=64), outer.bytes_("n", size=pp.COMMIT_NONCE_SIZE))
    hello = client.open_confirmed(msg, "reveal", _keys()[0], clear=("m", "n", "c"))
    DevicePublic.from_keys(hello.bytes_("sign", size=32), hello.bytes_("kx", size=32))
    hello.str_("name", max_len=128)


def _offer(msg: bytes) -> None:  # read by the joiner
    w = world()
    offer = client.open_confirmed(msg, "offer", _keys()[1])
    body = offer.bytes_("body", max_size=64 * 1024)
    account = AccountPublic.from_keys(offer.bytes_("account_sign", size=32),
                                      offer.bytes_("account_recovery", size=32))
    client._check_offer(body, account, w.newcomer, "new")
    relay_key = offer.bytes_("relay_key", max_size=32)
    if relay_key:
        Ed25519PublicKey.from_bytes(relay_key)


def _cosign(msg: bytes) -> None:  # read by the initiator, then sent to the relay
    w = world()
    _, cosign = pp.open_message(msg, "cosign", _keys()[0].receive)
    body = _offer_body()
    entry = reg.assemble_entry(body, reg.sign_body(body, w.laptop),
                               cosign.bytes_("cosig", size=64))
    w.state.apply(entry)


def _done(msg: bytes) -> None:  # read by the joiner
    pp.open_message(msg, "done", _keys()[1].receive)


_READERS: dict[str, Callable[[bytes], None]] = {
    "pake": _pake, "reveal": _reveal, "offer": _offer, "cosign": _cosign, "done": _done,
    "commit": _commit}


def _sealed(kind: str, plaintext: bytes) -> bytes:
    """The message a peer with the channel keys sends around ``plaintext``."""
    if kind == "pake":
        return pp.seal_message("pake", None, b"", extra={"m": plaintext})
    if kind == "commit":
        return pp.seal_message("commit", None, b"", extra={"h": plaintext})
    sender = _keys()[1] if kind in ("reveal", "cosign") else _keys()[0]
    msg: dict[str, object] = {"v": pp.PAIRING_VERSION, "t": kind}
    if kind == "reveal":
        msg.update(m=_JOINER_MSG, n=_COMMIT_NONCE)
    if kind in ("reveal", "offer"):
        msg["c"] = sender.my_confirm
    msg["box"] = _NONCE + aead_encrypt(sender.send, _NONCE, plaintext,
                                       labelled(labels.PAIRING_KEY, kind))
    return encode(msg)


def run(data: bytes) -> None:
    """Read one message as its receiver does."""
    selector, rest = (data[0], data[1:]) if data else (0, b"")
    kind = _KINDS[selector % len(_KINDS)]
    sealed = (selector // len(_KINDS)) % 2 == 1
    if kind == "pake" and not sealed:
        attempt(pp.decode_code, rest.decode("latin-1"), client.WORDS)
        attempt(pp.parse_uri, rest.decode("latin-1"))
    _READERS[kind](_sealed(kind, rest) if sealed else rest)


def _payloads() -> dict[str, bytes]:
    w = world()
    cosig = reg.countersign_body(_offer_body(), w.newcomer)
    return {
        "pake": Spake2("joiner", _PASSWORD, id_a=client._ID_A, id_b=client._ID_B).message,
        "reveal": encode({"sign": w.newcomer.signing.public.raw, "kx": w.newcomer.kx.public,
                          "name": "new"}),
        "offer": encode({"body": _offer_body(), "account_sign": w.account.signing.public.raw,
                         "account_recovery": w.account.recovery.public,
                         "relay_key": w.relay_key.public.raw}),
        "cosign": encode({"cosig": cosig}),
        "done": encode({"seq": w.state.seq + 1}),
        "commit": pp.commitment(_JOINER_MSG, _COMMIT_NONCE),
    }


def seeds() -> Iterator[bytes]:
    """Each honest message, whole and as its sealed plaintext; a pairing code."""
    for i, (kind, plaintext) in enumerate(_payloads().items()):
        yield bytes([i]) + _sealed(kind, plaintext)
        yield bytes([i + len(_KINDS)]) + plaintext
    code = pp.PairingCode(7, 0x1234567, pp.CODE_WORDS).text(client.WORDS)
    yield b"\x00" + code.encode()
    yield b"\x00" + pp.pairing_uri("https://relay.example", code).encode()


TARGETS = {"pairing": Target("pairing", run, seeds)}
