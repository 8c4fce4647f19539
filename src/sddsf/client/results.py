"""Typed answers of the relay's space and controller endpoints.

:class:`~sddsf.client.relay_client.RelayClient` returns these frozen dataclasses
(and :class:`~sddsf.client.transport.base.SpaceInfo` for a space) instead of the
relay's JSON: binary fields are bytes (decoded from base64), numbers are ints,
and an absent optional field is None.

Every answer is parsed here, in one place, and checked as strictly as the
relay's own response models (``sddsf.relay.models``) state it: a missing field,
a field of the wrong JSON type (``"3"`` or ``true`` for a number, a number for
text) or base64 that does not decode makes the whole answer a
:class:`~sddsf.errors.DecodeError` with code ``malformed``, never a
``KeyError`` or ``TypeError``. Fields the models leave open (a device's status,
an alert's rule and severity, an access level) stay text: a newer relay may add
values, and an older client shows them as they are.

The values are what the relay says, unverified: an audit receipt is checked by
:func:`sddsf.client.controller.remember_receipt`, the rest is the relay's view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sddsf.client.transport.base import Proof, SpaceInfo
from sddsf.errors import DecodeError
from sddsf.wire import unb64

__all__ = ["Alert", "DevicePosture", "DeviceTrust", "ReportReceipt", "TrustFactor",
           "parse_list", "parse_space"]

_T = TypeVar("_T")


class _Fields:
    """One JSON object of an answer, read field by field with its type checked.

    Every accessor raises :class:`DecodeError` (``malformed``) naming the object
    and the field; ``opt_*`` accessors take an absent field or null as None.
    """

    __slots__ = ("_data", "_what")

    def __init__(self, data: object, what: str) -> None:
        if not isinstance(data, dict):
            raise DecodeError(f"the relay sent a malformed {what}: not a JSON object")
        self._data: dict[str, object] = data
        self._what = what

    def _bad(self, key: str, problem: str) -> DecodeError:
        return DecodeError(f"the relay sent a malformed {self._what}: {key} {problem}")

    def _get(self, key: str) -> object:
        if key not in self._data:
            raise self._bad(key, "is missing")
        return self._data[key]

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self._bad(key, "is not text")
        return value

    def integer(self, key: str) -> int:
        value = self._get(key)
        # bool is an int subclass in Python; JSON true is not a number.
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "is not an integer")
        return value

    def flag(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise self._bad(key, "is not true or false")
        return value

    def raw(self, key: str) -> bytes:
        return unb64(self.text(key), f"the relay's {self._what} {key}")

    def items(self, key: str) -> list[object]:
        value = self._get(key)
        if not isinstance(value, list):
            raise self._bad(key, "is not a list")
        return value

    def raws(self, key: str) -> tuple[bytes, ...]:
        out = []
        for value in self.items(key):
            if not isinstance(value, str):
                raise self._bad(key, "holds a value that is not text")
            out.append(unb64(value, f"the relay's {self._what} {key}"))
        return tuple(out)

    def value(self, key: str) -> object:
        return self._get(key)

    def inner(self, key: str, what: str) -> _Fields:
        return _Fields(self._get(key), what)

    def absent(self, key: str) -> bool:
        return self._data.get(key) is None

    def opt_text(self, key: str) -> str | None:
        return None if self.absent(key) else self.text(key)

    def opt_integer(self, key: str) -> int | None:
        return None if self.absent(key) else self.integer(key)

    def opt_raw(self, key: str) -> bytes | None:
        return None if self.absent(key) else self.raw(key)


def parse_list(answer: object, key: str, parse: Callable[[object], _T]) -> list[_T]:
    """The list under ``key`` of an answer, each item parsed by ``parse``.

    Args:
        answer: the decoded JSON answer (an object).
        key: the name of its list field (``"alerts"``, ``"devices"``, ``"spaces"``).
        parse: parses one item (e.g. :meth:`Alert.from_json`).

    Returns:
        The parsed items, in the relay's order.

    Raises:
        DecodeError: ``malformed``: the answer is not an object, ``key`` is missing
            or not a list, or an item is malformed.
    """
    return [parse(item) for item in _Fields(answer, "answer").items(key)]


def parse_space(data: object) -> SpaceInfo:
    """A relay ``SpaceOut`` JSON object as a :class:`SpaceInfo`.

    Args:
        data: the decoded JSON object.

    Returns:
        The space's log state as the relay states it.

    Raises:
        DecodeError: ``malformed``: a field is missing or of the wrong type.
    """
    f = _Fields(data, "space")
    owner = f.raw("owner") if isinstance(data, dict) and "owner" in data else None
    return SpaceInfo(space_id=f.raw("space_id"), size=f.integer("size"), root=f.raw("root"),
                     epoch=f.integer("epoch"), owner=owner)


def _proof(data: object) -> Proof:
    # A relay ``Proof``: {"proof": [b64, ...], "tree_head": {"tree_head": b64, ...}}.
    f = _Fields(data, "report receipt proof")
    return Proof(hashes=f.raws("proof"),
                 tree_head=f.inner("tree_head", "report receipt tree head").raw("tree_head"))


@dataclass(frozen=True, slots=True)
class ReportReceipt:
    """The relay's answer to a device report (``POST /v1/accounts/{id}/reports``).

    A report that became an audit entry names it: its seq, its canonical bytes and
    an inclusion proof under a signed audit tree head (check them with
    :func:`sddsf.client.controller.remember_receipt`). A report that was not news
    (the same posture again, or an older one) has none of the three.
    """

    #: The report's kind as the relay read it (``posture``, ``pairing``, ``tombstones``).
    kind: str
    #: Whether the relay kept the report (False: older than the one it has).
    stored: bool
    #: The audit entry's seq (None: the report added no audit entry).
    audit_seq: int | None = None
    #: The audit entry's canonical bytes.
    entry: bytes | None = None
    #: The entry's inclusion proof and the signed audit tree head it ends at.
    proof: Proof | None = None

    @classmethod
    def from_json(cls, data: object) -> ReportReceipt:
        """Parse a relay ``ReportOut`` JSON object.

        Args:
            data: the decoded JSON object.

        Returns:
            The receipt (unverified).

        Raises:
            DecodeError: ``malformed``: a field is missing or of the wrong type.
        """
        f = _Fields(data, "report receipt")
        return cls(kind=f.text("kind"), stored=f.flag("stored"),
                   audit_seq=f.opt_integer("audit_seq"), entry=f.opt_raw("entry"),
                   proof=None if f.absent("proof") else _proof(f.value("proof")))


@dataclass(frozen=True, slots=True)
class TrustFactor:
    """One contribution to a device's trust score."""

    #: The factor (``key_storage``, ``forks``, ``open_alerts``, ...).
    name: str
    #: Points it adds (negative: it lowers the score).
    points: int
    #: Why, in a sentence a person can read.
    detail: str

    @classmethod
    def from_json(cls, data: object) -> TrustFactor:
        """Parse a relay ``FactorOut`` JSON object.

        Args:
            data: the decoded JSON object.

        Returns:
            The factor.

        Raises:
            DecodeError: ``malformed``: a field is missing or of the wrong type.
        """
        f = _Fields(data, "trust factor")
        return cls(name=f.text("name"), points=f.integer("points"), detail=f.text("detail"))


@dataclass(frozen=True, slots=True)
class DevicePosture:
    """A device's self-reported posture, from its last signed posture report."""

    os: str
    os_version: str
    app_version: str
    #: SHA-256 of the installed package's files (32 bytes).
    package_hash: bytes
    key_storage: str
    rooted: str
    attestation: str
    #: When the device signed the report (ms since the epoch, its clock).
    ts_ms: int

    @classmethod
    def from_json(cls, data: object) -> DevicePosture:
        """Parse a relay ``PostureOut`` JSON object.

        Args:
            data: the decoded JSON object.

        Returns:
            The posture.

        Raises:
            DecodeError: ``malformed``: a field is missing or of the wrong type.
        """
        f = _Fields(data, "device posture")
        return cls(os=f.text("os"), os_version=f.text("os_version"),
                   app_version=f.text("app_version"), package_hash=f.raw("package_hash"),
                   key_storage=f.text("key_storage"), rooted=f.text("rooted"),
                   attestation=f.text("attestation"), ts_ms=f.integer("ts_ms"))


@dataclass(frozen=True, slots=True)
class DeviceTrust:
    """A device of the account with the relay's trust score, access level and the
    factors that explain them (``GET /v1/controller/devices``)."""

    device_id: bytes
    name: str
    #: Its registry status (``active`` or ``revoked``).
    status: str
    #: Its trust score out of 100 (None: the device is not active).
    score: int | None
    #: What the policy lets it do (``full``, ``read_only``, ``denied``; None: not active).
    access: str | None
    #: Whether an open alert holds it read-only.
    quarantined: bool
    factors: tuple[TrustFactor, ...]
    #: Its last reported posture (None: it never reported one).
    posture: DevicePosture | None

    @classmethod
    def from_json(cls, data: object) -> DeviceTrust:
        """Parse a relay ``DeviceTrustOut`` JSON object.

        Args:
            data: the decoded JSON object.

        Returns:
            The device's trust.

        Raises:
            DecodeError: ``malformed``: a field is missing or of the wrong type.
        """
        f = _Fields(data, "device trust")
        posture = None
        if not f.absent("posture"):
            posture = DevicePosture.from_json(f.value("posture"))
        return cls(device_id=f.raw("device_id"), name=f.text("name"), status=f.text("status"),
                   score=f.opt_integer("score"), access=f.opt_text("access"),
                   quarantined=f.flag("quarantined"),
                   factors=tuple(TrustFactor.from_json(x) for x in f.items("factors")),
                   posture=posture)


@dataclass(frozen=True, slots=True)
class Alert:
    """A security alert of the account (``GET /v1/controller/alerts``)."""

    alert_id: bytes
    #: The device it is about (empty: an alert about the account).
    device_id: bytes
    #: The detector that raised it (``fork``, ``sig_failure_burst``, ...).
    rule: str
    #: ``low``, ``medium``, ``high`` or ``critical``.
    severity: str
    message: str
    #: Whether it quarantines its device (read-only) while open.
    quarantine: bool
    #: When an open quarantine ends by itself (None: not quarantining).
    quarantine_until_ms: int | None
    created_ms: int
    #: When it was acknowledged (None: open).
    acked_ms: int | None
    #: The device, or the account id, that acknowledged it.
    acked_by: bytes | None

    @classmethod
    def from_json(cls, data: object) -> Alert:
        """Parse a relay ``AlertOut`` JSON object.

        Args:
            data: the decoded JSON object.

        Returns:
            The alert.

        Raises:
            DecodeError: ``malformed``: a field is missing or of the wrong type.
        """
        f = _Fields(data, "alert")
        return cls(alert_id=f.raw("alert_id"), device_id=f.raw("device"), rule=f.text("rule"),
                   severity=f.text("severity"), message=f.text("message"),
                   quarantine=f.flag("quarantine"),
                   quarantine_until_ms=f.opt_integer("quarantine_until_ms"),
                   created_ms=f.integer("created_ms"), acked_ms=f.opt_integer("acked_ms"),
                   acked_by=f.opt_raw("acked_by"))
