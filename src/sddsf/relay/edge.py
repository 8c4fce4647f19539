"""Edge state: sessions, WebSocket tickets, the replay cache (request nonces and
used session challenges), rate-limit buckets and the devices' presence records
(protocol.md 23.5), behind one interface.

:class:`MemoryEdgeState` serves one relay process.
:class:`~sddsf.relay.edge_redis.RedisEdgeState` serves a cluster (the relay's
``redis_url`` setting; :func:`open_edge_state` picks one): every operation is a
single atomic step keyed by strings, with an expiry, which maps onto Redis
``SET NX PX`` / ``GETDEL`` / a Lua token bucket. Both pass the same
conformance suite (tests/relay/test_edge_conformance.py).

Session challenges are stateless (:func:`sddsf.protocol.auth.issue_challenge`):
nothing is stored when one is issued, and a used one is remembered in the nonce
cache, so issuing challenges cannot grow this state or replace anyone's.

Bounds: every map is capped, so a flood cannot grow memory without limit.
Sessions and tickets evict their oldest entry at the cap (the owner just
authenticates again); the nonce cache never evicts a live nonce
(that would allow a replay) and refuses new signed requests instead
(:class:`~sddsf.errors.RateLimitedError`). Presence records are capped per
space by the caller and in all by the state, which then drops the space
written least recently (its devices publish again).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from sddsf.errors import ConfigError, RateLimitedError

__all__ = ["EdgeState", "MemoryEdgeState", "Session", "open_edge_state"]

#: Presence records an in-process state holds in all (each at most ~2 KiB).
MAX_PRESENCE_RECORDS: Final = 20_000


@dataclass(frozen=True, slots=True)
class Session:
    """An authenticated device session."""

    account_id: bytes
    device_id: bytes
    expires_ms: int


class EdgeState(ABC):
    """Edge state contract. ``now_ms`` is always passed in (tests inject a clock).

    Every operation may raise :class:`~sddsf.errors.UnavailableError` when the
    state lives in a service that cannot be reached: the relay then refuses the
    request (HTTP 503) rather than accept it unchecked (fail closed).
    """

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to close here
        """Release connections (the app calls this on shutdown)."""

    async def ping(self) -> None:  # noqa: B027 - optional hook, in-process state is up
        """One round trip to the backing service (readiness). Raises UnavailableError."""

    @abstractmethod
    async def put_session(self, token_digest: bytes, session: Session, now_ms: int) -> None:
        """Store a session under the hash of its token."""

    @abstractmethod
    async def get_session(self, token_digest: bytes, now_ms: int) -> Session | None:
        """The live session for a token hash, or None (expired or dropped)."""

    @abstractmethod
    async def drop_session(self, token_digest: bytes) -> bool:
        """Drop one session (its token leaked: a replayed or forged request came
        with it). Returns whether it was there."""

    @abstractmethod
    async def drop_device(self, device_id: bytes) -> int:
        """Drop every session and ticket of a device (revocation). Returns how many."""

    @abstractmethod
    async def put_ticket(self, ticket: bytes, session: Session, expires_ms: int,
                         now_ms: int) -> None:
        """Store a single-use WebSocket ticket."""

    @abstractmethod
    async def take_ticket(self, ticket: bytes, now_ms: int) -> Session | None:
        """Consume a ticket: the first call returns its session, later calls None."""

    @abstractmethod
    async def remember_nonce(self, key: bytes, expires_ms: int, now_ms: int) -> bool:
        """Record a request nonce. True if it was new, False if seen before (a replay).

        Raises:
            RateLimitedError: the cache is full of live nonces (fail closed).
        """

    @abstractmethod
    async def remember_request(self, key: bytes, tag: bytes, expires_ms: int,
                               now_ms: int) -> tuple[bytes, int] | None:
        """Record a signed request's nonce with a ``tag`` (what identifies the
        request's bytes). None if the nonce was new; else the ``(tag, first_ms)``
        stored when it was first seen (``now_ms`` then), to tell a byte-identical
        duplicate from a replay.

        Raises:
            RateLimitedError: the cache is full of live nonces (fail closed).
        """

    @abstractmethod
    async def take_tokens(self, bucket: str, cost: float, rate_per_s: float, burst: float,
                          now_ms: int) -> float:
        """Token bucket: take ``cost`` tokens. Returns 0.0 if allowed, else the
        seconds to wait before ``cost`` tokens will be available (nothing taken)."""

    @abstractmethod
    async def put_presence(self, space_id: bytes, device_id: bytes, value: bytes,
                           expires_ms: int, now_ms: int, *, max_devices: int) -> bool:
        """Store ``value`` as the presence of ``device_id`` in ``space_id`` until
        ``expires_ms``, replacing that device's previous one (whatever its expiry).

        Contract: a record is live while ``now_ms < expires_ms`` (the lifetime is
        ``expires_ms - now_ms`` on the caller's clock, so nodes with skewed clocks
        agree on it); only live records count and are served; the check and the
        write are one atomic step, so concurrent writers never exceed the bound.
        A record may be forgotten before it expires (a restarted process, a cap):
        its device publishes again.

        Args:
            space_id: the space.
            device_id: the publishing device (one record per device and space).
            value: the bytes to serve back (opaque here).
            expires_ms: when the record dies; after ``now_ms``.
            now_ms: the caller's clock.
            max_devices: the most devices with a live record in the space.

        Returns:
            True when stored; False, storing nothing, when ``max_devices`` other
            devices already have a live record in the space.

        Raises:
            UnavailableError: the backing service cannot be reached.
        """

    @abstractmethod
    async def presence(self, space_id: bytes, now_ms: int) -> list[tuple[bytes, bytes]]:
        """The live presence records of a space (see :meth:`put_presence`).

        Args:
            space_id: the space.
            now_ms: the caller's clock.

        Returns:
            ``(device_id, value)`` for each device with a live record, sorted by
            device id (empty for a space without any).

        Raises:
            UnavailableError: the backing service cannot be reached.
        """


class _Expiring:
    """An insertion-ordered map with per-entry expiry and a hard cap."""

    __slots__ = ("cap", "items")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.items: OrderedDict[bytes, tuple[int, object]] = OrderedDict()

    def sweep(self, now_ms: int) -> None:
        # Entries are appended in time order only approximately, so sweep
        # from the front while expired and stop at the first live one; the
        # cap below bounds whatever remains.
        while self.items:
            key, (expires, _) = next(iter(self.items.items()))
            if expires > now_ms:
                break
            del self.items[key]

    def put(self, key: bytes, value: object, expires_ms: int, now_ms: int) -> bool:
        self.sweep(now_ms)
        if key not in self.items and len(self.items) >= self.cap:
            self.items.popitem(last=False)  # evict the oldest rather than grow
        self.items[key] = (expires_ms, value)
        self.items.move_to_end(key)
        return True

    def get(self, key: bytes, now_ms: int) -> object | None:
        entry = self.items.get(key)
        if entry is None or entry[0] <= now_ms:
            return None
        return entry[1]

    def pop(self, key: bytes, now_ms: int) -> object | None:
        entry = self.items.pop(key, None)
        if entry is None or entry[0] <= now_ms:
            return None
        return entry[1]


class MemoryEdgeState(EdgeState):
    """In-process edge state for a single relay node."""

    def __init__(self, *, max_entries: int = 200_000,
                 max_presence: int = MAX_PRESENCE_RECORDS) -> None:
        self._sessions = _Expiring(max_entries)
        self._tickets = _Expiring(max_entries)
        # The nonce cache must never evict a live nonce (that would allow a
        # replay), so at the cap it refuses new requests instead (see below).
        self._nonces: OrderedDict[bytes, int] = OrderedDict()
        self._max_nonces = max_entries
        self._tags: OrderedDict[bytes, tuple[bytes, int]] = OrderedDict()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_buckets = max_entries
        # space -> device -> (expires_ms, value); spaces in order of their last write.
        self._presence: OrderedDict[bytes, dict[bytes, tuple[int, bytes]]] = OrderedDict()
        self._presence_count = 0
        self._max_presence = max_presence

    async def put_session(self, token_digest: bytes, session: Session, now_ms: int) -> None:
        self._sessions.put(token_digest, session, session.expires_ms, now_ms)

    async def get_session(self, token_digest: bytes, now_ms: int) -> Session | None:
        value = self._sessions.get(token_digest, now_ms)
        return value if isinstance(value, Session) else None

    async def drop_session(self, token_digest: bytes) -> bool:
        return self._sessions.items.pop(token_digest, None) is not None

    async def drop_device(self, device_id: bytes) -> int:
        dropped = 0
        for store in (self._sessions, self._tickets):
            for key in [k for k, (_, s) in store.items.items()
                        if isinstance(s, Session) and s.device_id == device_id]:
                del store.items[key]
                dropped += 1
        return dropped

    async def put_ticket(self, ticket: bytes, session: Session, expires_ms: int,
                         now_ms: int) -> None:
        self._tickets.put(ticket, session, expires_ms, now_ms)

    async def take_ticket(self, ticket: bytes, now_ms: int) -> Session | None:
        value = self._tickets.pop(ticket, now_ms)
        return value if isinstance(value, Session) else None

    async def remember_nonce(self, key: bytes, expires_ms: int, now_ms: int) -> bool:
        while self._nonces:
            oldest, expires = next(iter(self._nonces.items()))
            if expires > now_ms:
                break
            del self._nonces[oldest]
        if key in self._nonces and self._nonces[key] > now_ms:
            return False
        if len(self._nonces) >= self._max_nonces:
            # Fail closed: refusing a fresh request is safe, forgetting a live
            # nonce is not. Rate limits keep honest clients far below the cap.
            oldest_expiry = next(iter(self._nonces.values()))
            raise RateLimitedError("too many signed requests in the freshness window; retry",
                                   retry_after_s=max(1.0, (oldest_expiry - now_ms) / 1000))
        self._nonces[key] = expires_ms
        return True

    async def remember_request(self, key: bytes, tag: bytes, expires_ms: int,
                               now_ms: int) -> tuple[bytes, int] | None:
        """See :meth:`EdgeState.remember_request` (shares the nonce cache and its cap)."""
        seen = self._tags.get(key)
        if not await self.remember_nonce(key, expires_ms, now_ms):
            return seen if seen is not None else (b"", 0)
        self._tags.pop(key, None)
        self._tags[key] = (tag, now_ms)
        while self._tags:  # forget the tags of expired nonces (both in time order)
            oldest = next(iter(self._tags))
            if oldest in self._nonces:
                break
            del self._tags[oldest]
        return None

    async def take_tokens(self, bucket: str, cost: float, rate_per_s: float, burst: float,
                          now_ms: int) -> float:
        tokens, last_ms = self._buckets.get(bucket, (burst, float(now_ms)))
        tokens = min(burst, tokens + max(0.0, now_ms - last_ms) * rate_per_s / 1000.0)
        if tokens >= cost:
            self._buckets[bucket] = (tokens - cost, float(now_ms))
            self._buckets.move_to_end(bucket)
            if len(self._buckets) > self._max_buckets:
                # The oldest bucket has refilled the longest: dropping it only
                # ever gives a client a full bucket it would nearly have anyway.
                self._buckets.popitem(last=False)
            return 0.0
        self._buckets[bucket] = (tokens, float(now_ms))
        return (cost - tokens) / rate_per_s if rate_per_s > 0 else float("inf")


    async def put_presence(self, space_id: bytes, device_id: bytes, value: bytes,
                           expires_ms: int, now_ms: int, *, max_devices: int) -> bool:
        """See :meth:`EdgeState.put_presence` (at the total cap, the spaces written
        least recently are dropped whole)."""
        if self._presence:  # reclaim the oldest space's dead records as we go
            self._live_presence(next(iter(self._presence)), now_ms)
        records = self._live_presence(space_id, now_ms)
        if device_id not in records:
            if len(records) >= max_devices:
                return False
            self._presence_count += 1
        records[device_id] = (expires_ms, value)
        self._presence[space_id] = records
        self._presence.move_to_end(space_id)
        while self._presence_count > self._max_presence and len(self._presence) > 1:
            _, dropped = self._presence.popitem(last=False)
            self._presence_count -= len(dropped)
        return True

    async def presence(self, space_id: bytes, now_ms: int) -> list[tuple[bytes, bytes]]:
        """See :meth:`EdgeState.presence`."""
        return sorted((d, v) for d, (_, v) in self._live_presence(space_id, now_ms).items())

    def _live_presence(self, space_id: bytes, now_ms: int) -> dict[bytes, tuple[int, bytes]]:
        # The space's records with the dead ones removed (a new dict for a space
        # without any: the caller stores it if it writes).
        records = self._presence.get(space_id)
        if records is None:
            return {}
        dead = [d for d, (expires, _) in records.items() if expires <= now_ms]
        for d in dead:
            del records[d]
        self._presence_count -= len(dead)
        if not records:
            del self._presence[space_id]
        return records


def open_edge_state(redis_url: str = "", *, prefix: str = "sddsf:edge:",
                    timeout_s: float = 2.0) -> EdgeState:
    """The edge state for a relay: shared through Redis when ``redis_url`` is set,
    else in this process.

    Raises:
        ConfigError: a Redis URL without the ``redis`` extra installed, or one
            that redis-py cannot use.
    """
    if not redis_url:
        return MemoryEdgeState()
    try:
        from sddsf.relay.edge_redis import RedisEdgeState  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise ConfigError("a shared edge state needs redis-py: pip install 'sddsf[redis]'"
                          ) from exc
    return RedisEdgeState(redis_url, prefix=prefix, timeout_s=timeout_s)
