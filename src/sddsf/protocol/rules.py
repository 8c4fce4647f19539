"""THE op verification rules: one implementation, run by the relay and by every client.

:func:`verify_op` decides whether an op envelope is accepted into a space, is
an idempotent duplicate of one already accepted, or is rejected with a typed
error. Rules, in the order they are applied (cheap and state-free first, so
bad traffic is dropped before any expensive or stateful step)::

    1  size and structure            too_large, malformed
    2  format version and suite      unsupported_version, unsupported_suite
    3  space matches                 wrong_context
    4  author known to the registry  unknown_device
    5  same (author, seq) already    identical bytes -> DUPLICATE (idempotent,
       accepted?                     even if later rules would now refuse it)
    6  author not revoked            revoked
    7  header version 2 for new ops  unsupported_version (live mode only)
       registry the author named     wrong_context (``reg`` beyond the
       is known to the verifier      verifier's registry: sync it first)
       epoch not compromised         epoch_compromised (a device revoked at a
                                     registry seq r, epoch package seq < r <= reg)
       epoch current, or previous    stale_epoch, unknown_epoch (no grace for an
       within the grace window       epoch a device revoked since could read)
    8  timestamp not in the future   clock_skew (ahead of the verifier's clock
       beyond the skew window        by more than max_skew_ms; an old timestamp
                                     is fine: offline edits arrive late)
    9  signature                     sig_invalid
    10 chain: seq contiguous and     chain_gap, chain_fork (same seq, other
       prev linked                   bytes; or prev not the head's op id)
    11 deps monotonic, no self dep   deps_regression

A fork is reported only after the signature checks (rule 9 runs before the
fork verdict), so forged bytes never become evidence against a device.

History mode (``now_ms=None``) is for a client verifying ops that the relay
already ordered: the clock rule is skipped and any epoch up to the current one
is allowed, because an op that was fresh when written stays valid history;
header version 1 is accepted as history; the compromised-epoch rule applies
(it depends only on the signed ``reg`` and the registry, not on time).
The registry passed in must be the one that applies at the op's position in
the log (for history, the state before any later revocation of its author).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, Protocol

from sddsf.errors import (
    AuthorizationError,
    ChainError,
    ClockSkewError,
    Code,
    ContextError,
    DecodeError,
    EpochError,
    SddsfError,
)
from sddsf.protocol.envelope import HEADER_VERSION, OpEnvelope, decode_envelope
from sddsf.protocol.limits import DEFAULT_PROTOCOL_LIMITS, ProtocolLimits
from sddsf.protocol.registry import DeviceRecord, DeviceStatus, RegistryState
from sddsf.protocol.vv import VersionVector

__all__ = [
    "DEFAULT_RULES",
    "ChainHead",
    "ChainView",
    "EpochWindow",
    "MemoryChainView",
    "Outcome",
    "RuleSettings",
    "Verdict",
    "verify_batch",
    "verify_op",
]

_MINUTE: Final = 60_000


@dataclass(frozen=True, slots=True)
class RuleSettings:
    """Tunable windows of the rules (relay and clients must agree)."""

    max_skew_ms: int = 10 * _MINUTE
    epoch_grace_ms: int = 24 * 60 * _MINUTE
    limits: ProtocolLimits = DEFAULT_PROTOCOL_LIMITS


DEFAULT_RULES: Final = RuleSettings()


@dataclass(frozen=True, slots=True)
class EpochWindow:
    """The space's current key epoch and when it started (ms since the epoch).

    ``package_seqs[e]`` is the ``registry_seq`` of epoch ``e``'s key package (the
    registry state its recipients were computed at), for every epoch up to
    ``current``: the compromised-epoch rule needs it. Verifiers (the relay, every
    client) MUST supply it; a window without it skips that rule.
    """

    current: int
    started_ms: int
    package_seqs: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last accepted op of one author in one space."""

    seq: int
    op_id: bytes
    deps: VersionVector


class ChainView(Protocol):
    """Read access to the accepted per-author chains of one space.

    The relay answers from storage (prefetched for a batch); a client from its
    local store. Implementations must reflect every op accepted before.
    """

    def head(self, author: bytes) -> ChainHead | None:
        """The author's last accepted op, or None if it has none here."""
        ...

    def op_id_at(self, author: bytes, seq: int) -> bytes | None:
        """The id of the author's accepted op at ``seq``, or None."""
        ...


@dataclass
class MemoryChainView:
    """A :class:`ChainView` in memory; :meth:`record` adds an accepted op."""

    heads: dict[bytes, ChainHead] = field(default_factory=dict)
    ids: dict[tuple[bytes, int], bytes] = field(default_factory=dict)

    def head(self, author: bytes) -> ChainHead | None:
        """See :class:`ChainView`."""
        return self.heads.get(author)

    def op_id_at(self, author: bytes, seq: int) -> bytes | None:
        """See :class:`ChainView`."""
        return self.ids.get((author, seq))

    def record(self, envelope: OpEnvelope) -> None:
        """Record an op that :func:`verify_op` accepted."""
        h = envelope.header
        self.heads[h.author] = ChainHead(h.seq, envelope.op_id, h.deps)
        self.ids[(h.author, h.seq)] = envelope.op_id


class Outcome(Enum):
    """What to do with a verified op."""

    ACCEPT = "accept"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Result of :func:`verify_op` (rejections are raised, not returned)."""

    outcome: Outcome
    envelope: OpEnvelope


def _revoked_after(registry: RegistryState, window: EpochWindow, epoch: int,
                   up_to: int) -> DeviceRecord | None:
    # A device revoked after epoch's package was made (and at or before registry
    # seq ``up_to``) may hold the epoch key: the package listed it, or a later
    # package it received carried the key as history.
    if epoch >= len(window.package_seqs):
        return None
    made_at = window.package_seqs[epoch]
    if not registry.revoked_between(made_at, up_to):  # the common case, O(log n)
        return None
    for rec in registry.devices.values():
        if rec.revoked_seq is not None and made_at < rec.revoked_seq <= up_to:
            return rec
    return None


def _check_epoch(env: OpEnvelope, registry: RegistryState, window: EpochWindow,
                 now_ms: int | None, settings: RuleSettings) -> None:
    h = env.header
    epoch = h.epoch
    if now_ms is not None and h.version < HEADER_VERSION:
        raise DecodeError(f"op header version {h.version} is history only: new ops carry the "
                          f"registry seq their author verified (version {HEADER_VERSION}); "
                          "update the client that made this op", Code.UNSUPPORTED_VERSION)
    if epoch > window.current:
        raise EpochError(f"op uses key epoch {epoch} but the space is at epoch "
                         f"{window.current}; fetch the space's key packages", Code.UNKNOWN_EPOCH)
    if h.reg is not None:
        if h.reg > registry.seq:
            raise ContextError(f"op was written after registry entry {h.reg}, but this "
                               f"verifier's registry ends at {registry.seq}; sync the "
                               "registry first")
        if (revoked := _revoked_after(registry, window, epoch, h.reg)) is not None:
            raise EpochError(
                f"op was sealed under key epoch {epoch} after its author had seen the "
                f"revocation of device {revoked.name!r} (registry entry {revoked.revoked_seq}), "
                "which holds that epoch's key: rotate the space's key and re-encrypt",
                Code.EPOCH_COMPROMISED)
    if epoch == window.current or now_ms is None:
        return
    if (epoch == window.current - 1 and now_ms <= window.started_ms + settings.epoch_grace_ms
            and _revoked_after(registry, window, epoch, registry.seq) is None):
        return
    raise EpochError(f"op uses key epoch {epoch}, which was replaced by epoch {window.current};"
                     " re-encrypt it under the current key", Code.STALE_EPOCH)


def _check_chain(env: OpEnvelope, chains: ChainView) -> None:
    h = env.header
    head = chains.head(h.author)
    head_seq = head.seq if head is not None else 0
    if h.seq > head_seq + 1:
        raise ChainError(f"op seq {h.seq} skips ahead of the author's last accepted seq "
                         f"{head_seq}; send the missing ops first", Code.CHAIN_GAP)
    if h.seq <= head_seq:
        raise ChainError(f"a different op already holds seq {h.seq} of this author "
                         "(equivocation or a device restored from an old backup)",
                         Code.CHAIN_FORK)
    if head is not None and h.prev != head.op_id:
        raise ChainError(f"op seq {h.seq} does not link to the author's previous op",
                         Code.CHAIN_FORK)
    if h.author in h.deps:
        raise ChainError("op deps must not name the author itself", Code.DEPS_REGRESSION)
    if head is not None and not h.deps.dominates(head.deps):
        raise ChainError("op deps go backwards relative to the author's previous op",
                         Code.DEPS_REGRESSION)


def verify_op(data: bytes | OpEnvelope, *, space: bytes, registry: RegistryState,
              epochs: EpochWindow, chains: ChainView, now_ms: int | None,
              settings: RuleSettings | None = None) -> Verdict:
    """Apply every rule to one op. Pure: reads only its arguments.

    Args:
        data: envelope bytes, or an envelope already decoded with the same limits.
        space: the space the op is submitted to (or was pulled from).
        registry: the verified registry that applies to this op.
        epochs: the space's current key epoch.
        chains: accepted chains of this space (the caller records accepted ops).
        now_ms: the verifier's clock; ``None`` selects history mode.

    Returns:
        :class:`Verdict` with ``ACCEPT`` or ``DUPLICATE``.

    Raises:
        DecodeError, ContextError, AuthorizationError, EpochError,
        ClockSkewError, SignatureError, ChainError (see the module docstring).
    """
    settings = settings or DEFAULT_RULES
    env = data if isinstance(data, OpEnvelope) else decode_envelope(
        data, limits=settings.limits)
    pre = _precheck(env, space, registry, epochs, now_ms, settings)
    return _finish(pre, chains)


@dataclass(frozen=True, slots=True)
class _Prechecked:
    """Outcome of the state-free rules for one op (see module docstring).

    ``early`` is a failure of rules 1-4 (reported even for a duplicate),
    ``late`` a failure of rules 6-9 (not reported for a duplicate).
    """

    env: OpEnvelope | None
    early: SddsfError | None = None
    late: SddsfError | None = None


def _precheck(data: bytes | OpEnvelope, space: bytes, registry: RegistryState,
              epochs: EpochWindow, now_ms: int | None, settings: RuleSettings) -> _Prechecked:
    # Rules 1-4 and 6-9: independent of the chains, so batches can run them in
    # parallel (signature verification releases the GIL).
    try:
        env = data if isinstance(data, OpEnvelope) else decode_envelope(
            data, limits=settings.limits)
    except SddsfError as exc:
        return _Prechecked(None, early=exc)
    h = env.header
    if h.space != space:
        return _Prechecked(env, early=ContextError("op was signed for another space"))
    author = registry.device(h.author)
    if author is None:
        return _Prechecked(env, early=AuthorizationError(
            "op author is not a device of this account", Code.UNKNOWN_DEVICE))
    try:
        # A revoked author's ops up to its revocation cutoff stay valid history
        # (history mode); anything later, or anything new at a relay, is refused.
        if author.status is DeviceStatus.REVOKED and (
                now_ms is not None or h.seq > author.cutoff.get(h.space, 0)):
            raise AuthorizationError("op author has been revoked; its writes are refused",
                                     Code.REVOKED)
        _check_epoch(env, registry, epochs, now_ms, settings)
        # Ordering never uses wall clocks (THREATS #19); a timestamp from the
        # future would poison every peer's hybrid logical clock, so only that is refused.
        if now_ms is not None and h.ts.wall_ms - now_ms > settings.max_skew_ms:
            raise ClockSkewError(f"op timestamp is {(h.ts.wall_ms - now_ms) // 1000} s ahead "
                                 f"of the verifier's clock (limit "
                                 f"{settings.max_skew_ms // 1000} s); check the device's clock")
        env.verify_signature(author.public.signing_key)
    except SddsfError as exc:
        return _Prechecked(env, late=exc)
    return _Prechecked(env)


def _finish(pre: _Prechecked, chains: ChainView) -> Verdict:
    # Rule 5 (duplicate) between the early and the late rules, then 10-11.
    if pre.early is not None:
        raise pre.early
    env = pre.env
    if env is None:  # pragma: no cover - _precheck sets early when env is None
        raise AssertionError("no envelope")
    if chains.op_id_at(env.header.author, env.header.seq) == env.op_id:
        return Verdict(Outcome.DUPLICATE, env)
    if pre.late is not None:
        raise pre.late
    _check_chain(env, chains)
    return Verdict(Outcome.ACCEPT, env)


def verify_batch(items: Sequence[bytes | OpEnvelope], *, space: bytes,
                 registry: RegistryState, epochs: EpochWindow, chains: MemoryChainView,
                 now_ms: int | None, settings: RuleSettings | None = None,
                 parallel_map: Callable[[Callable[[list[bytes | OpEnvelope]],
                                                  list[_Prechecked]],
                                         list[list[bytes | OpEnvelope]]],
                                        list[list[_Prechecked]]] | None = None,
                 chunks: int = 1) -> list[Verdict | SddsfError]:
    """Verify a batch with the same result as :func:`verify_op` applied to each item
    in order (recording each accepted op in ``chains`` before the next).

    The state-free rules (including the signature) run over ``chunks`` slices
    of the batch through ``parallel_map`` (e.g. a thread pool's map; PyNaCl
    releases the GIL while verifying); the chain rules then run in order.
    A property test checks the equivalence with :func:`verify_op`.

    Returns:
        One :class:`Verdict` or rejection (an :class:`SddsfError`) per item.
    """
    settings = settings or DEFAULT_RULES

    def run(part: list[bytes | OpEnvelope]) -> list[_Prechecked]:
        return [_precheck(x, space, registry, epochs, now_ms, settings) for x in part]

    size = max(1, -(-len(items) // max(1, chunks)))
    parts = [list(items[i:i + size]) for i in range(0, len(items), size)]
    mapped = (parallel_map or (lambda f, ps: [f(p) for p in ps]))(run, parts)
    out: list[Verdict | SddsfError] = []
    for pre in (p for part in mapped for p in part):
        try:
            verdict = _finish(pre, chains)
        except SddsfError as exc:
            out.append(exc)
            continue
        if verdict.outcome is Outcome.ACCEPT:
            chains.record(verdict.envelope)
        out.append(verdict)
    return out
