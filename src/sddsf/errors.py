"""The one exception tree of SDDSF, with stable error codes.

Every rejection anywhere in SDDSF (protocol core, relay, client, CLI) is an
instance of :class:`SddsfError` carrying a stable :class:`Code`. Codes are part
of the wire protocol: the relay sends ``{"code": ..., "message": ...}`` and the
client maps the code back to the same class with :func:`error_from_wire`.
Codes never change meaning; new ones may be added.

The tree (after h11's Local/Remote split)::

    SddsfError                      code, message, http_status
    ├── LocalProtocolError          you (the caller) misused the API
    │   ├── UsageError              bad argument, wrong state
    │   └── ConfigError             bad configuration value
    ├── ServiceError                the service cannot do it now (nobody misbehaved)
    │   ├── UnavailableError        unavailable (HTTP 503: retry later, nothing was stored)
    │   ├── ConflictError           conflict (a concurrent writer won; re-read and retry)
    │   ├── NotFoundError           not_found
    │   └── InternalError           internal (HTTP 500: a relay bug; nothing was acknowledged)
    └── RemoteProtocolError         the peer (device or relay) misbehaved
        ├── DecodeError             malformed, too_large, unsupported_version, unsupported_suite
        ├── RateLimitedError        rate_limited (HTTP 429 with Retry-After)
        └── VerificationError       well-formed but not acceptable
            ├── AuthenticationError unauthenticated (no, expired or wrong session), replay
            ├── SignatureError      sig_invalid
            ├── KeyValidationError  bad_key (low-order / non-canonical public key)
            ├── ContextError        wrong_context (transplanted into another space/doc/epoch)
            ├── ChainError          chain_fork, chain_gap, deps_regression
            ├── AuthorizationError  unknown_device, revoked, not_authorized,
            │                       policy_read_only, policy_denied
            ├── EpochError          stale_epoch, unknown_epoch, epoch_compromised,
            │                       rotation_blocked
            ├── ClockSkewError      clock_skew, presence_expired
            ├── RegistryError       registry_invalid, registry_fork
            │                       (an unauthorised registry signer is AuthorizationError)
            ├── MembershipError     membership_invalid
            │                       (an unauthorised membership signer is AuthorizationError)
            ├── ProofError          proof_invalid, tree_head_invalid, log_rollback,
            │                       split_view, key_package_fork, registry_withheld,
            │                       snapshot_mismatch
            └── DecryptError        decrypt_failed

Messages are written for a person: they say what was wrong and, where it
helps, what to do. They never contain key material or plaintext.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "AuthenticationError",
    "AuthorizationError",
    "ChainError",
    "ClockSkewError",
    "Code",
    "ConfigError",
    "ConflictError",
    "ContextError",
    "DecodeError",
    "DecryptError",
    "EpochError",
    "InternalError",
    "KeyValidationError",
    "LocalProtocolError",
    "MembershipError",
    "NotFoundError",
    "ProofError",
    "RateLimitedError",
    "RegistryError",
    "RemoteProtocolError",
    "SddsfError",
    "ServiceError",
    "SignatureError",
    "UnavailableError",
    "UsageError",
    "VerificationError",
    "error_from_wire",
]


class Code(StrEnum):
    """Stable error codes. The value is what travels on the wire."""

    # local misuse
    USAGE = "usage"
    CONFIG = "config"
    # decoding
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNSUPPORTED_SUITE = "unsupported_suite"
    # verification
    SIG_INVALID = "sig_invalid"
    BAD_KEY = "bad_key"
    WRONG_CONTEXT = "wrong_context"
    CHAIN_FORK = "chain_fork"
    CHAIN_GAP = "chain_gap"
    DEPS_REGRESSION = "deps_regression"
    UNKNOWN_DEVICE = "unknown_device"
    REVOKED = "revoked"
    NOT_AUTHORIZED = "not_authorized"
    POLICY_READ_ONLY = "policy_read_only"
    POLICY_DENIED = "policy_denied"
    STALE_EPOCH = "stale_epoch"
    UNKNOWN_EPOCH = "unknown_epoch"
    EPOCH_COMPROMISED = "epoch_compromised"
    ROTATION_BLOCKED = "rotation_blocked"
    CLOCK_SKEW = "clock_skew"
    PRESENCE_EXPIRED = "presence_expired"
    REGISTRY_INVALID = "registry_invalid"
    REGISTRY_FORK = "registry_fork"
    MEMBERSHIP_INVALID = "membership_invalid"
    PROOF_INVALID = "proof_invalid"
    TREE_HEAD_INVALID = "tree_head_invalid"
    LOG_ROLLBACK = "log_rollback"
    SPLIT_VIEW = "split_view"
    KEY_PACKAGE_FORK = "key_package_fork"
    REGISTRY_WITHHELD = "registry_withheld"
    SNAPSHOT_MISMATCH = "snapshot_mismatch"
    DECRYPT_FAILED = "decrypt_failed"
    # relay edge and service
    UNAUTHENTICATED = "unauthenticated"
    REPLAY = "replay"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"
    REQUEST_TIMEOUT = "request_timeout"
    INTERNAL = "internal"


class SddsfError(Exception):
    """Root of every SDDSF error.

    Attributes:
        code: the stable :class:`Code` of this rejection.
        message: a sentence for a person (no secrets, no plaintext).
    """

    default_code: Code = Code.USAGE

    def __init__(self, message: str, code: Code | None = None) -> None:
        self.code: Code = code if code is not None else self.default_code
        # Invariant: a code always travels with its one class, so that
        # error_from_wire(e.code, ...) rebuilds an instance of the same class.
        expected = _CLASS_FOR_CODE.get(self.code)
        if expected is not None and not isinstance(self, expected):
            raise TypeError(f"code {self.code.value!r} belongs to {expected.__name__}, "
                            f"not {type(self).__name__}")
        self.message = message
        super().__init__(f"[{self.code.value}] {message}")

    @property
    def http_status(self) -> int:
        """The HTTP status the relay answers with for this error."""
        return HTTP_STATUS[self.code]

    def to_wire(self) -> dict[str, str]:
        """The ``{code, message}`` body the relay sends.

        Returns:
            The error's stable code (its ``Code`` value) and its message.

        Raises:
            Nothing of its own.
        """
        return {"code": self.code.value, "message": self.message}


class LocalProtocolError(SddsfError):
    """The caller misused the API (a bug or a wrong argument on this side)."""


class UsageError(LocalProtocolError):
    """An argument or call order that the API does not allow."""

    default_code = Code.USAGE


class ConfigError(LocalProtocolError):
    """A configuration value that is missing or out of range."""

    default_code = Code.CONFIG


class ServiceError(SddsfError):
    """The service cannot do this now; neither side misbehaved."""


class UnavailableError(ServiceError):
    """A dependency (the database) is unavailable; nothing was stored. Retry later."""

    default_code = Code.UNAVAILABLE


class ConflictError(ServiceError):
    """A concurrent writer changed the state first; re-read and retry."""

    default_code = Code.CONFLICT


class NotFoundError(ServiceError):
    """The account, space, channel or object does not exist."""

    default_code = Code.NOT_FOUND


class InternalError(ServiceError):
    """An unexpected failure inside the relay (a bug); nothing was acknowledged."""

    default_code = Code.INTERNAL


class RemoteProtocolError(SddsfError):
    """The peer (another device or the relay) sent something unacceptable."""


class DecodeError(RemoteProtocolError):
    """Bytes that do not decode as the expected structure, or exceed a limit."""

    default_code = Code.MALFORMED


class RateLimitedError(RemoteProtocolError):
    """Too many requests; ``retry_after_s`` says when to try again."""

    default_code = Code.RATE_LIMITED

    def __init__(self, message: str, code: Code | None = None, *,
                 retry_after_s: float = 1.0) -> None:
        super().__init__(message, code)
        self.retry_after_s = retry_after_s


class VerificationError(RemoteProtocolError):
    """A well-formed structure that fails a verification rule."""


class AuthenticationError(VerificationError):
    """No valid session, or a replayed or stale signed request."""

    default_code = Code.UNAUTHENTICATED


class SignatureError(VerificationError):
    """A signature does not verify. Deliberately opaque (one error for every cause)."""

    default_code = Code.SIG_INVALID


class KeyValidationError(VerificationError):
    """A public key that is low-order, non-canonical or otherwise unusable."""

    default_code = Code.BAD_KEY


class ContextError(VerificationError):
    """A structure bound to one context (space, doc, epoch, author) presented in another."""

    default_code = Code.WRONG_CONTEXT


class ChainError(VerificationError):
    """A per-author hash chain rule failed: fork, gap or deps regression."""

    default_code = Code.CHAIN_FORK


class AuthorizationError(VerificationError):
    """The signer is unknown, revoked, or not allowed to do this."""

    default_code = Code.NOT_AUTHORIZED


class EpochError(VerificationError):
    """The key epoch is too old, not known yet, readable by a revoked device, or
    cannot be replaced (the relay refuses every new epoch)."""

    default_code = Code.STALE_EPOCH


class ClockSkewError(VerificationError):
    """A timestamp lies outside the allowed window: too far from the verifier's
    clock (``clock_skew``), or a presence record already past its expiry
    (``presence_expired``)."""

    default_code = Code.CLOCK_SKEW


class RegistryError(VerificationError):
    """The device registry (sigchain) does not verify from genesis."""

    default_code = Code.REGISTRY_INVALID


class MembershipError(VerificationError):
    """A space membership entry breaks a membership rule (not first, duplicate,
    no such member, the last admin would go, a replay)."""

    default_code = Code.MEMBERSHIP_INVALID


class ProofError(VerificationError):
    """A Merkle proof or signed tree head fails, the log went back in time, or the
    relay serves conflicting or withheld key material or registry entries."""

    default_code = Code.PROOF_INVALID


class DecryptError(VerificationError):
    """Authenticated decryption failed (wrong key, or tampered ciphertext)."""

    default_code = Code.DECRYPT_FAILED


#: Each code's one class and the HTTP status the relay answers with (a 5xx is
#: never a peer's fault). One table, so a code cannot drift between the two.
_CODES: Final[dict[Code, tuple[type[SddsfError], int]]] = {
    Code.USAGE: (UsageError, 400),
    Code.CONFIG: (ConfigError, 400),
    Code.MALFORMED: (DecodeError, 400),
    Code.TOO_LARGE: (DecodeError, 413),
    Code.UNSUPPORTED_VERSION: (DecodeError, 400),
    Code.UNSUPPORTED_SUITE: (DecodeError, 400),
    Code.SIG_INVALID: (SignatureError, 401),
    Code.BAD_KEY: (KeyValidationError, 400),
    Code.WRONG_CONTEXT: (ContextError, 400),
    Code.CHAIN_FORK: (ChainError, 409),
    Code.CHAIN_GAP: (ChainError, 409),
    Code.DEPS_REGRESSION: (ChainError, 409),
    Code.UNKNOWN_DEVICE: (AuthorizationError, 403),
    Code.REVOKED: (AuthorizationError, 403),
    Code.NOT_AUTHORIZED: (AuthorizationError, 403),
    Code.POLICY_READ_ONLY: (AuthorizationError, 403),
    Code.POLICY_DENIED: (AuthorizationError, 403),
    Code.STALE_EPOCH: (EpochError, 409),
    Code.UNKNOWN_EPOCH: (EpochError, 409),
    Code.EPOCH_COMPROMISED: (EpochError, 409),
    Code.ROTATION_BLOCKED: (EpochError, 409),
    Code.CLOCK_SKEW: (ClockSkewError, 400),
    Code.PRESENCE_EXPIRED: (ClockSkewError, 400),
    Code.REGISTRY_INVALID: (RegistryError, 400),
    Code.REGISTRY_FORK: (RegistryError, 409),
    Code.MEMBERSHIP_INVALID: (MembershipError, 409),
    Code.PROOF_INVALID: (ProofError, 400),
    Code.TREE_HEAD_INVALID: (ProofError, 400),
    Code.LOG_ROLLBACK: (ProofError, 409),
    Code.SPLIT_VIEW: (ProofError, 409),
    Code.KEY_PACKAGE_FORK: (ProofError, 409),
    Code.REGISTRY_WITHHELD: (ProofError, 409),
    Code.SNAPSHOT_MISMATCH: (ProofError, 409),
    Code.DECRYPT_FAILED: (DecryptError, 400),
    Code.UNAUTHENTICATED: (AuthenticationError, 401),
    Code.REPLAY: (AuthenticationError, 401),
    Code.RATE_LIMITED: (RateLimitedError, 429),
    Code.NOT_FOUND: (NotFoundError, 404),
    Code.CONFLICT: (ConflictError, 409),
    Code.UNAVAILABLE: (UnavailableError, 503),
    Code.REQUEST_TIMEOUT: (UnavailableError, 408),
    Code.INTERNAL: (InternalError, 500),
}
_CLASS_FOR_CODE: Final[dict[Code, type[SddsfError]]] = {c: v[0] for c, v in _CODES.items()}
HTTP_STATUS: Final[dict[Code, int]] = {c: v[1] for c, v in _CODES.items()}


def error_from_wire(code: str, message: str) -> SddsfError:
    """Rebuild the typed error a peer reported as ``{code, message}``.

    An unknown code (a newer peer) becomes a :class:`DecodeError` with code
    ``malformed`` and the peer's code kept in the message.

    Args:
        code: The stable error code the peer sent (a ``Code`` value).
        message: The peer's human-readable message.

    Returns:
        An instance of the error class that owns ``code``, not raised.

    Raises:
        Nothing of its own: an unknown code is returned as a ``DecodeError``.
    """
    try:
        known = Code(code)
    except ValueError:
        return DecodeError(f"peer reported unknown error code {code!r}: {message}",
                           Code.MALFORMED)
    return _CLASS_FOR_CODE[known](message, known)
