"""HTTP API models (JSON). Binary fields are URL-safe base64 (RFC 4648 §5, with
padding), in JSON bodies and in URL paths alike.

These pydantic models are the single source of the OpenAPI document served at
``/openapi.json``: what is documented is what the handlers parse and return.

Size: the pydantic models are the single source of the OpenAPI document, one
model per request and response of the HTTP API; one module keeps that
document's source in one place.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from sddsf.errors import Code
from sddsf.wire import b64, unb64

__all__ = [
    "INT64_MAX",
    "AccountAckIn",
    "AccountCreated",
    "AlertOut",
    "AlertsOut",
    "AuditEntryOut",
    "AuditPage",
    "BackupBlob",
    "BackupDeleted",
    "BackupFetch",
    "BackupIn",
    "BackupKdf",
    "BackupKdfOut",
    "ChallengeRequest",
    "ChallengeResponse",
    "ChannelBurn",
    "ChannelClaim",
    "ChannelClaimed",
    "ChannelCreated",
    "ChannelMessageIn",
    "ChannelMessages",
    "ChannelOpen",
    "CreateAccount",
    "CreateSpace",
    "DecimalInt",
    "DeviceTrustOut",
    "DevicesTrustOut",
    "EncryptionPolicyOut",
    "ErrorBody",
    "FactorOut",
    "KeyPackageIn",
    "KeyPackages",
    "OpResultOut",
    "OpsIn",
    "OpsOut",
    "PlainBool",
    "PostureOut",
    "PresenceIn",
    "PresenceRecords",
    "PresenceStored",
    "Proof",
    "RegistryEntries",
    "RegistryEntryIn",
    "ReportIn",
    "ReportOut",
    "SessionRequest",
    "SessionResponse",
    "SnapshotIn",
    "SnapshotOut",
    "SpaceOut",
    "SpacesOut",
    "StoredOpOut",
    "TicketResponse",
    "TreeHeadOut",
    "b64",
    "unb64",
]

#: The largest integer a query parameter may carry. Offsets, seqs and epochs are
#: signed 64-bit in storage (SQLite INTEGER, PostgreSQL BIGINT): a larger value
#: is refused as malformed (400) before it reaches the database.
INT64_MAX = 2**63 - 1

# Base64 text of at most ~1.4 MiB (the request limit applies first anyway).
B64 = Annotated[str, Field(max_length=1_500_000, pattern=r"^[A-Za-z0-9_-]*={0,2}$",
                           description="URL-safe base64 (RFC 4648 section 5) with padding")]


_DECIMAL = re.compile(r"-?[0-9]{1,19}")


def _plain_decimal(value: object) -> object:
    # A query parameter is text; pydantic's lax int would also take "2.0",
    # "1_000", "+2" and " 2". One spelling per number (what clients sign).
    if isinstance(value, str) and not _DECIMAL.fullmatch(value):
        raise ValueError("expected an integer in plain decimal digits")
    return value


def _plain_bool(value: object) -> object:
    # Lax bool would take "yes", "on", "t", "1": only the JSON spellings here.
    if isinstance(value, str) and value not in ("true", "false"):
        raise ValueError("expected true or false")
    return value


#: An integer query parameter: plain decimal digits, optionally negative.
DecimalInt = Annotated[int, BeforeValidator(_plain_decimal)]
#: A boolean query parameter: ``true`` or ``false``.
PlainBool = Annotated[bool, BeforeValidator(_plain_bool)]


class _Strict(BaseModel):
    # strict: a JSON true or "2" is not an integer, "yes" is not a boolean, 2.0
    # is not an int (pydantic's lax mode would coerce each); extra keys refused.
    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorBody(_Strict):
    """Every error response."""

    code: Code = Field(description="stable error code (docs/protocol.md section 14)")
    message: str
    request_id: str | None = Field(default=None, description="the request's id (its "
                                   "X-Request-Id), for the relay operator's logs")


class CreateAccount(_Strict):
    """A verified genesis entry creates the account."""

    genesis: B64


class AccountCreated(_Strict):
    """The account id (hash of the account key) and whether it was new."""

    account_id: B64
    created: bool


class RegistryEntries(_Strict):
    """Registry entries from ``since`` on, in seq order."""

    entries: list[B64]
    next_seq: int


class RegistryEntryIn(_Strict):
    """One new, signed registry entry."""

    entry: B64


class ChallengeRequest(_Strict):
    """Ask for a session challenge."""

    account_id: B64
    device_id: B64


class ChallengeResponse(_Strict):
    """A single-use challenge to sign."""

    challenge: B64
    relay_id: B64
    expires_ms: int


class SessionRequest(_Strict):
    """The signed challenge."""

    account_id: B64
    device_id: B64
    challenge: B64
    signature: B64


class SessionResponse(_Strict):
    """A bearer token for ``Authorization: Bearer``, and the optional features
    this relay serves (e.g. ``bootstrap``: ``GET /v1/bootstrap``)."""

    token: B64
    expires_ms: int
    features: list[str] = []


class BootstrapOut(_Strict):
    """A new device's first-sync bundle, signed by the relay (protocol 17.9)."""

    bundle: str = Field(description="URL-safe base64 of the signed bundle")


class TicketResponse(_Strict):
    """A single-use WebSocket ticket."""

    ticket: B64
    expires_ms: int


class CreateSpace(_Strict):
    """A new space with its epoch-0 key package."""

    space_id: B64
    key_package: B64


class SpaceOut(_Strict):
    """A space's log state."""

    space_id: B64
    size: int
    root: B64
    epoch: int
    #: The account that created the space (its owner; in a shared space, the
    #: account whose ``create`` entry starts the membership).
    owner: B64 | None = None


class SpacesOut(_Strict):
    """The account's spaces."""

    spaces: list[SpaceOut]


class KeyPackageIn(_Strict):
    """The next epoch's key package."""

    key_package: B64


class KeyPackages(_Strict):
    """Key packages from ``since_epoch`` on."""

    key_packages: list[B64]


class OpsIn(_Strict):
    """A batch of op envelopes for one space."""

    ops: list[B64] = Field(max_length=10_000)
    proofs: bool = Field(default=True, description="include inclusion proofs in the results")


class OpResultOut(_Strict):
    """Per-op outcome."""

    status: Literal["accepted", "duplicate", "rejected"]
    offset: int | None = None
    op_id: B64 | None = None
    proof: list[B64] | None = None
    code: str | None = None
    message: str | None = None


class TreeHeadOut(_Strict):
    """A signed tree head and its decoded size/root."""

    tree_head: B64
    size: int
    root: B64


class OpsOut(_Strict):
    """Results of a batch upload."""

    results: list[OpResultOut]
    tree_head: TreeHeadOut


class StoredOpOut(_Strict):
    """One op of the log (``envelope`` is null once pruned, or when ``own``: an
    op of the caller omitted because it asked with ``omit_own``)."""

    offset: int
    op_id: B64
    leaf_hash: B64
    envelope: B64 | None
    own: bool = False
    #: ``"member"`` for a membership entry (protocol.md 21.7; ``envelope`` holds
    #: the entry); absent for an op.
    kind: str | None = None


class MembershipIn(_Strict):
    """One signed membership entry (protocol.md 21.1)."""

    entry: B64


class MemberOut(_Strict):
    """A member account and its role."""

    account_id: B64
    role: str


class MembershipAppended(_Strict):
    """Where the entry sits in the space log, and the membership after it."""

    status: str  # accepted | duplicate
    offset: int
    members: list[MemberOut]
    tree_head: TreeHeadOut


class MembershipEntryOut(_Strict):
    """A membership entry at its log offset."""

    offset: int
    entry: B64


class MembershipLog(_Strict):
    """Every membership entry of a space in log order, with the current tree head."""

    entries: list[MembershipEntryOut]
    members: list[MemberOut]
    owner: B64
    tree_head: TreeHeadOut


class OpsPage(_Strict):
    """A page of the log."""

    ops: list[StoredOpOut]
    tree_head: TreeHeadOut
    next_after: int


class Proof(_Strict):
    """An RFC 9162 proof (audit path)."""

    proof: list[B64]
    tree_head: TreeHeadOut


class SnapshotIn(_Strict):
    """A signed encrypted snapshot of one doc covering offsets <= covers_offset."""

    covers_offset: int = Field(ge=-1)
    blob: B64


class SnapshotOut(_Strict):
    """The stored snapshot."""

    covers_offset: int
    blob: B64


class PresenceIn(_Strict):
    """A presence record of the calling device in the space (protocol.md 23.5)."""

    record: B64


class PresenceStored(_Strict):
    """The stored record's expiry (the relay serves it until then)."""

    expires_ms: int


class PresenceRecords(_Strict):
    """The live presence records of the space's devices (verify and open each)."""

    records: list[B64]


class ChunkIn(_Strict):
    """One chunk of a chunked snapshot (its id is the hash of these bytes)."""

    blob: B64


class ChunkStored(_Strict):
    """The id a chunk was stored under."""

    chunk_id: B64


class ChunkOut(_Strict):
    """A stored snapshot chunk."""

    blob: B64


class AttestationIn(_Strict):
    """A device's signed verdict on the doc's current snapshot."""

    attestation: B64


class AttestationsOut(_Strict):
    """Every stored signed verdict on the doc's current snapshot."""

    snapshot_id: B64 | None
    attestations: list[B64]


class AckIn(_Strict):
    """This device has applied every op up to ``offset`` (-1: none)."""

    offset: int = Field(ge=-1)


class AckOut(_Strict):
    """The stored acknowledgement and how far the space's log is pruned."""

    acked: int
    pruned_before: int


class ChannelOpen(_Strict):
    """Open a pairing channel: the pairing version the client speaks."""

    version: int = Field(ge=0, le=1_000, description="pairing version (2)")


class ChannelCreated(_Strict):
    """A new pairing channel: its id, its number (the start of the code) and expiry."""

    channel_id: B64
    nameplate: int
    expires_ms: int
    version: int


class ChannelClaim(_Strict):
    """Claim the joiner slot of the channel numbered ``nameplate``."""

    nameplate: int = Field(ge=1, le=999_999)


class ChannelClaimed(_Strict):
    """The claimed channel."""

    channel_id: B64
    expires_ms: int


class ChannelMessageIn(_Strict):
    """An opaque pairing message at ``index`` (0, 1, ...: joiner, initiator, ...)."""

    index: int = Field(ge=0, le=1_000)
    body: Annotated[str, Field(max_length=87_384, pattern=r"^[A-Za-z0-9_-]*={0,2}$",
                               description="URL-safe base64 of at most 64 KiB")]


class ChannelBurn(_Strict):
    """Why the channel is burnt."""

    reason: Literal["done", "cancelled", "rejected", "mismatch", "timeout", "failed"] = "failed"


class ChannelMessage(_Strict):
    """One stored pairing message."""

    index: int
    sender: str
    body: B64


class ChannelMessages(_Strict):
    """Messages after the requested index."""

    messages: list[ChannelMessage]


class BackupKdf(_Strict):
    """Argon2id parameters of a passphrase backup (``m`` in KiB)."""

    alg: Literal["argon2id"]
    t: int = Field(ge=1, le=2**32 - 1)
    m: int = Field(ge=1, le=2**32 - 1)
    p: int = Field(ge=1, le=2**24 - 1)
    salt: Annotated[str, Field(max_length=88, pattern=r"^[A-Za-z0-9_-]*={0,2}$",
                               description="URL-safe base64 of 16 to 64 bytes")]


class BackupIn(_Strict):
    """A passphrase backup: its KDF parameters, the 32-byte verifier and the blob."""

    kdf: BackupKdf
    verifier: Annotated[str, Field(max_length=44, pattern=r"^[A-Za-z0-9_-]*={0,2}$",
                                   description="URL-safe base64 of 32 bytes")]
    blob: Annotated[str, Field(max_length=5464, pattern=r"^[A-Za-z0-9_-]*={0,2}$",
                               description="URL-safe base64 of at most 4096 bytes")]


class BackupKdfOut(_Strict):
    """The stored backup's KDF parameters."""

    kdf: BackupKdf


class BackupDeleted(_Strict):
    """Whether a backup was deleted."""

    deleted: bool


class BackupFetch(_Strict):
    """The verifier derived from the passphrase."""

    verifier: Annotated[str, Field(max_length=44, pattern=r"^[A-Za-z0-9_-]*={0,2}$",
                                   description="URL-safe base64 of 32 bytes")]


class AccountGenesis(_Strict):
    """The account a fingerprint names: its id and genesis registry entry."""

    account_id: B64
    genesis: B64


class BackupAccount(_Strict):
    """The account whose backup a fingerprint names."""

    account_id: B64


class BackupBlob(_Strict):
    """The backup blob (released for the right verifier only)."""

    blob: B64


# ------------------------------------------------------------------ controller


class ReportIn(_Strict):
    """A device report (posture, pairing, tombstones), signed by the device."""

    report: B64


class ReportOut(_Strict):
    """Whether the report was news, and the audit leaf it became (with an inclusion
    proof against a signed audit tree head) when it was logged."""

    kind: str
    stored: bool
    audit_seq: int | None = None
    entry: B64 | None = None
    proof: Proof | None = None


class FactorOut(_Strict):
    """One contribution to a trust score."""

    name: str
    points: int
    detail: str


class PostureOut(_Strict):
    """A device's self-reported posture (decoded from its signed report)."""

    os: str
    os_version: str
    app_version: str
    package_hash: B64
    key_storage: str
    rooted: str
    attestation: str
    ts_ms: int


class DeviceTrustOut(_Strict):
    """A device's trust score, access level and factors (``score`` null if revoked)."""

    device_id: B64
    name: str
    status: str
    score: int | None
    access: str | None
    quarantined: bool
    factors: list[FactorOut]
    posture: PostureOut | None


class DevicesTrustOut(_Strict):
    """Every device of the caller's account."""

    devices: list[DeviceTrustOut]


class AlertOut(_Strict):
    """A controller alert; ``device`` is empty for an account-level alert."""

    alert_id: B64
    device: B64
    rule: str
    severity: str
    message: str
    quarantine: bool
    quarantine_until_ms: int | None = Field(
        default=None, description="when an open quarantine ends by itself "
                                  "(alerts.quarantine_max_s); null when not quarantining")
    created_ms: int
    acked_ms: int | None
    acked_by: B64 | None = Field(description="the device, or the account id when the "
                                             "account key acknowledged it")


class AccountAckIn(_Strict):
    """Alerts acknowledged with the account key: ``signature`` by the account key over
    ``labelled("sddsf/v1/controller/alert-ack", account_id, ts_ms, [alert_id, ...])``;
    an empty list means every open alert created at or before ``ts_ms``."""

    alert_ids: list[B64] = Field(max_length=1000)
    ts_ms: int = Field(ge=0, le=INT64_MAX)
    signature: B64


class AlertsOut(_Strict):
    """The account's alerts, oldest first."""

    alerts: list[AlertOut]


class AuditEntryOut(_Strict):
    """One audit log entry (canonical bytes) at its seq."""

    seq: int
    entry: B64


class AuditPage(_Strict):
    """Audit entries from ``start`` and the signed head of the whole log."""

    entries: list[AuditEntryOut]
    tree_head: TreeHeadOut
    next_start: int


class EncryptionPolicyOut(_Strict):
    """The relay's signed encryption policy (verify it with the pinned relay key)."""

    policy: B64

