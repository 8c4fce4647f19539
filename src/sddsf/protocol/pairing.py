"""Pairing a new device (version 2): the short code, the commitment, SPAKE2 keys,
the short authentication string, key confirmation and the sealed messages
(sans-IO; ``docs/protocol.md`` section 19).

The approving device (``initiator``) opens a relay mailbox, which the relay
numbers (the *nameplate*), and shows a code like ``7-crossover-clockwork-pilot``:
the nameplate, then words of the BIP39 English list that carry a random secret
and a 6-bit checksum over the nameplate and the secret (a typo is caught before
anything is sent). The new device (``joiner``) types it, or scans the QR code
(``sddsf://pair?relay=...&code=...``). Both run SPAKE2 on a password derived
from the code; the relay, which sees the SPAKE2 messages, can make one online
guess per code, and any failure burns the code.

Messages through the mailbox (canonical CBOR maps, ``v`` = 2), strictly
alternating, joiner first (the relay refuses any other order, and any change
of a posted message):

0. joiner ``commit``: ``h`` = ``tagged_hash(PAIRING_COMMIT, m_joiner, n)``
1. initiator ``pake``: ``m`` = its SPAKE2 message
2. joiner ``reveal``: ``m`` = its SPAKE2 message, ``n``, ``c`` = its
   confirmation tag, and a box with ``{"sign","kx","name"}``
3. initiator ``offer``: ``c`` = its tag, box ``{"body","account_sign",
   "account_recovery","relay_key"}``
4. joiner ``cosign``: box ``{"cosig"}``
5. initiator ``done``: box ``{"seq"}``

The commitment is what makes the words worth comparing: whoever sits in the
middle (and knows the code) must fix its message to the initiator before it
sees the initiator's, and send its message to the joiner before the joiner's is
revealed, so it cannot search for messages that give both sides the same words
(55 bits: one chance in 2**55 per attempt, one attempt per code).
"""

from __future__ import annotations

import difflib
import re
import urllib.parse
from dataclasses import dataclass
from typing import Final

from sddsf.crypto import (
    AEAD_NONCE_SIZE,
    aead_decrypt,
    aead_encrypt,
    constant_time_equal,
    hkdf_sha256,
    random_bytes,
)
from sddsf.errors import AuthenticationError, Code, DecodeError, UsageError
from sddsf.protocol import labels
from sddsf.protocol.encoding import decode, encode
from sddsf.protocol.labels import labelled, tagged_hash
from sddsf.protocol.schema import Fields, expect_map

__all__ = [
    "CHECK_BITS",
    "CODE_WORDS",
    "COMMIT_NONCE_SIZE",
    "KINDS",
    "MAX_CODE_WORDS",
    "MESSAGE_COUNT",
    "MIN_CODE_WORDS",
    "NAMEPLATE_MAX",
    "PAIRING_VERSION",
    "SAS_BITS",
    "TOKEN_SIZE",
    "PairingCode",
    "PairingKeys",
    "check_commitment",
    "commitment",
    "decode_code",
    "expected_sender",
    "new_code",
    "open_message",
    "pairing_keys",
    "pairing_uri",
    "parse_uri",
    "password_bits",
    "seal_message",
]

PAIRING_VERSION: Final = 2
#: Words in a code by default (27 secret bits); ``sddsf device add --code-words``.
CODE_WORDS: Final = 3
MIN_CODE_WORDS: Final = 3
MAX_CODE_WORDS: Final = 8
#: Checksum bits in every code: a mistyped word or number is caught with
#: probability 63/64 (a word not in the list always).
CHECK_BITS: Final = 6
#: The relay numbers live mailboxes 1, 2, ...; a code's number has at most 6 digits.
NAMEPLATE_MAX: Final = 999_999
#: The joiner's commitment nonce; the mailbox slot tokens.
COMMIT_NONCE_SIZE: Final = 32
TOKEN_SIZE: Final = 32
#: One pairing is exactly these messages, in this order (index = position).
KINDS: Final = ("commit", "pake", "reveal", "offer", "cosign", "done")
MESSAGE_COUNT: Final = len(KINDS)
_SAS_WORDS: Final = 5
SAS_BITS: Final = 11 * _SAS_WORDS
_WORD_BITS: Final = 11
_MAX_MESSAGE: Final = 64 * 1024
_ROLES: Final = ("initiator", "joiner")
_OLD_CODE_CHARS: Final = 39  # base32 of channel id (16) + password (6) + check (2)
_MAX_CODE_TEXT: Final = 200


def password_bits(words: int) -> int:
    """Secret bits a code of ``words`` words carries (the rest is the checksum)."""
    return _WORD_BITS * words - CHECK_BITS


def expected_sender(index: int) -> str:
    """Who posts mailbox message ``index``: the joiner the even ones, the initiator the odd."""
    return "joiner" if index % 2 == 0 else "initiator"


@dataclass(frozen=True, slots=True, repr=False)
class PairingCode:
    """What a pairing code carries: the mailbox number and the secret."""

    nameplate: int
    secret: int
    words: int

    def _secret_bytes(self) -> bytes:
        return self.secret.to_bytes((password_bits(self.words) + 7) // 8, "big")

    def _check(self) -> int:
        digest = tagged_hash(labels.PAIRING_CODE, "check", self.nameplate, self.words,
                             self._secret_bytes())
        return digest[0] >> (8 - CHECK_BITS)

    @property
    def password(self) -> bytes:
        """The SPAKE2 password: bound to the mailbox number and the word count."""
        return labelled(labels.PAIRING_CODE, "password", self.nameplate, self.words,
                        self._secret_bytes())

    def text(self, wordlist: list[str]) -> str:
        """The code as people read and type it: ``7-crossover-clockwork-pilot``."""
        _check_wordlist(wordlist)
        value = (self.secret << CHECK_BITS) | self._check()
        words = [wordlist[(value >> (_WORD_BITS * (self.words - 1 - i))) & 0x7FF]
                 for i in range(self.words)]
        return "-".join([str(self.nameplate), *words])


def _check_wordlist(wordlist: list[str]) -> None:
    if len(wordlist) != 2048:
        raise UsageError("the pairing word list has 2048 words")


def new_code(nameplate: int, words: int = CODE_WORDS) -> PairingCode:
    """A fresh random code for mailbox ``nameplate``.

    Raises:
        UsageError: a nameplate or word count out of range.
    """
    if not 1 <= nameplate <= NAMEPLATE_MAX:
        raise UsageError(f"a pairing mailbox number is 1 to {NAMEPLATE_MAX}")
    if not MIN_CODE_WORDS <= words <= MAX_CODE_WORDS:
        raise UsageError(f"a pairing code has {MIN_CODE_WORDS} to {MAX_CODE_WORDS} words")
    bits = password_bits(words)
    secret = int.from_bytes(random_bytes((bits + 7) // 8), "big") >> (-bits % 8)
    return PairingCode(nameplate, secret, words)


def decode_code(code: str, wordlist: list[str]) -> PairingCode:
    """Parse a pairing code typed by a person (case, spaces and dashes are loose).

    Raises:
        UsageError: not a pairing code, a word not in the list, an old-style
            (version 1) code, or a typo (the checksum does not match).
    """
    _check_wordlist(wordlist)
    text = code.strip()
    compact = re.sub(r"[-\s]", "", text).upper()
    if len(compact) == _OLD_CODE_CHARS and re.fullmatch(r"[A-Z2-7]+", compact) \
            and not text[:1].isdigit():
        raise UsageError("that is an old-style pairing code (from sddsf before pairing "
                         "version 2): update sddsf on the device that showed it, then "
                         "start again with `sddsf device add`")
    parts = [p for p in re.split(r"[\s\-]+", text.lower()) if p]
    if len(text) > _MAX_CODE_TEXT or len(parts) < 2 or not parts[0].isdecimal() \
            or len(parts[0]) > 6 or not MIN_CODE_WORDS <= len(parts) - 1 <= MAX_CODE_WORDS:
        raise UsageError("that is not a pairing code: it looks like 7-crossover-clockwork-"
                         "pilot (a number, then the words `sddsf device add` shows)")
    index = {w: i for i, w in enumerate(wordlist)}
    value = 0
    for word in parts[1:]:
        if word not in index:
            close = difflib.get_close_matches(word, wordlist, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise UsageError(f"{word!r} is not a pairing word{hint} Check the code against "
                             "the other device's screen")
        value = (value << _WORD_BITS) | index[word]
    parsed = PairingCode(int(parts[0]), value >> CHECK_BITS, len(parts) - 1)
    mask = (1 << CHECK_BITS) - 1
    if not 1 <= parsed.nameplate <= NAMEPLATE_MAX or parsed._check() != value & mask:
        raise UsageError("the pairing code has a typo (its checksum does not match): check "
                         "the number and every word against the other device's screen")
    return parsed


def pairing_uri(relay_url: str, code: str) -> str:
    """What the QR code holds: ``sddsf://pair?relay=<url>&code=<code>``."""
    return "sddsf://pair?" + urllib.parse.urlencode({"relay": relay_url, "code": code})


def parse_uri(text: str) -> tuple[str, str] | None:
    """``(relay_url, code)`` of a pairing link, or None when ``text`` is not one.

    Raises:
        UsageError: an ``sddsf:`` link that is not a well-formed pairing link.
    """
    if not text.strip().lower().startswith("sddsf:"):
        return None
    bad = UsageError("that is not a pairing link: it looks like "
                     "sddsf://pair?relay=https://...&code=7-crossover-clockwork-pilot")
    try:  # urllib raises ValueError on some malformed links (e.g. a broken IPv6 host)
        parts = urllib.parse.urlsplit(text.strip())
        if parts.netloc != "pair" or parts.path not in ("", "/") or parts.fragment:
            raise bad
        query = urllib.parse.parse_qs(parts.query, strict_parsing=True)
        if set(query) != {"relay", "code"} or any(len(v) != 1 for v in query.values()):
            raise bad
        relay = query["relay"][0]
        scheme = urllib.parse.urlsplit(relay).scheme
    except ValueError:
        raise bad from None
    if scheme not in ("http", "https"):
        raise UsageError("the pairing link names a relay that is not an http(s) URL")
    return relay, query["code"][0]


def commitment(joiner_msg: bytes, nonce: bytes) -> bytes:
    """The joiner's commitment to its SPAKE2 message (message 0)."""
    if len(nonce) != COMMIT_NONCE_SIZE:
        raise UsageError("a pairing commitment nonce has 32 bytes")
    return tagged_hash(labels.PAIRING_COMMIT, joiner_msg, nonce)


def check_commitment(committed: bytes, joiner_msg: bytes, nonce: bytes) -> None:
    """Check that the revealed message is the one the joiner committed to.

    Raises:
        AuthenticationError: it is not (``unauthenticated``): someone who knows
            the code tried to choose its message after seeing the initiator's.
    """
    if len(nonce) != COMMIT_NONCE_SIZE or not constant_time_equal(
            commitment(joiner_msg, nonce), committed):
        raise AuthenticationError("the new device's key exchange does not match what it "
                                  "committed to first: someone in the middle tried to "
                                  "choose it after seeing this device's; nothing was added. "
                                  "The code is burnt: start again with a new code",
                                  Code.UNAUTHENTICATED)


@dataclass(frozen=True, slots=True, repr=False)
class PairingKeys:
    """Everything derived from the SPAKE2 key and the transcript."""

    send: bytes
    receive: bytes
    my_confirm: bytes
    peer_confirm: bytes
    sas: tuple[str, ...]

    def check_peer(self, tag: bytes) -> None:
        """Check the peer's confirmation tag.

        Raises:
            AuthenticationError: the peer derived another key (``unauthenticated``):
                a wrong pairing code, or someone in the middle.
        """
        if not constant_time_equal(tag, self.peer_confirm):
            raise AuthenticationError("the pairing code did not match on the other device "
                                      "(a wrong code or an interception); the code is "
                                      "burnt: start again with a new code",
                                      Code.UNAUTHENTICATED)


def pairing_keys(role: str, key: bytes, *, channel_id: bytes, commitment: bytes,
                 initiator_msg: bytes, joiner_msg: bytes,
                 wordlist: list[str]) -> PairingKeys:
    """Derive the channel keys, confirmation tags and words for ``role``.

    The transcript binds the version, the mailbox, the commitment and both
    SPAKE2 messages.
    """
    if role not in _ROLES:
        raise UsageError("a pairing role is 'initiator' or 'joiner'")
    _check_wordlist(wordlist)
    transcript = tagged_hash(labels.PAIRING_KEY, PAIRING_VERSION, channel_id, commitment,
                             initiator_msg, joiner_msg)

    def direction(sender: str) -> bytes:
        return hkdf_sha256(key, salt=labels.PAIRING_KEY.encode(),
                           info=labelled(labels.PAIRING_KEY, sender, transcript))

    def confirm(sender: str) -> bytes:
        return tagged_hash(labels.PAIRING_CONFIRM, key, sender, transcript)

    sas_bits = int.from_bytes(tagged_hash(labels.PAIRING_SAS, key, transcript), "big")
    words = tuple(wordlist[(sas_bits >> (_WORD_BITS * i)) & 0x7FF] for i in range(_SAS_WORDS))
    peer = "joiner" if role == "initiator" else "initiator"
    return PairingKeys(send=direction(role), receive=direction(peer),
                       my_confirm=confirm(role), peer_confirm=confirm(peer), sas=words)


def seal_message(kind: str, key: bytes | None, nonce: bytes, *, payload: dict[str, object]
                 | None = None, extra: dict[str, object] | None = None) -> bytes:
    """A mailbox message of type ``kind``; ``payload`` is sealed under ``key``.

    ``extra`` fields travel in the clear (the commitment ``h``, a SPAKE2
    message ``m``, the commitment nonce ``n``, a confirmation tag ``c``).
    """
    if kind not in KINDS:
        raise UsageError(f"no pairing message type {kind!r}")
    msg: dict[str, object] = {"v": PAIRING_VERSION, "t": kind, **(extra or {})}
    if payload is not None:
        if key is None or len(nonce) != AEAD_NONCE_SIZE:
            raise UsageError("a sealed pairing message needs a key and a 24-byte nonce")
        ad = labelled(labels.PAIRING_KEY, kind)
        msg["box"] = nonce + aead_encrypt(key, nonce, encode(payload), ad)
    return encode(msg)


def open_message(data: bytes, kind: str, key: bytes | None, *,
                 clear: tuple[str, ...] = ()) -> tuple[Fields, Fields]:
    """Decode a mailbox message of the expected ``kind``; open its box with ``key``.

    Returns the outer fields and the opened payload (empty without a box).

    Raises:
        DecodeError: malformed, too large, of another version
            (``unsupported_version``: the other device runs another sddsf), or
            not the expected message type.
        DecryptError: the box does not open (another key: a wrong code).
    """
    if len(data) > _MAX_MESSAGE:
        raise DecodeError("pairing message too large", Code.TOO_LARGE)
    value = decode(data)
    if isinstance(value, dict) and value.get("v") != PAIRING_VERSION:
        raise DecodeError(f"the other device speaks pairing version {value.get('v')!r}, "
                          f"this one {PAIRING_VERSION}: update sddsf on both devices",
                          Code.UNSUPPORTED_VERSION)
    if isinstance(value, dict) and value.get("t") != kind:
        raise DecodeError(f"expected a pairing {kind!r} message, got {value.get('t')!r}")
    outer = expect_map(value, "pairing message",
                       ("v", "t", *clear, *(("box",) if key is not None else ())))
    if key is None:
        return outer, Fields({}, f"pairing {kind}")
    box = outer.bytes_("box", max_size=_MAX_MESSAGE)
    if len(box) < AEAD_NONCE_SIZE + 16:
        raise DecodeError("pairing message box is too short")
    plain = aead_decrypt(key, box[:AEAD_NONCE_SIZE], box[AEAD_NONCE_SIZE:],
                         labelled(labels.PAIRING_KEY, kind))
    inner = decode(plain)
    if not isinstance(inner, dict):
        raise DecodeError("pairing payload: expected a map")
    return outer, Fields({k: v for k, v in inner.items()}, f"pairing {kind}")
