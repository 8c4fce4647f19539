"""Edge state in Redis, shared by every relay process of a deployment.

:class:`RedisEdgeState` implements :class:`~sddsf.relay.edge.EdgeState` with
one atomic Redis step per operation, so sessions, WebSocket tickets, the replay
cache (request nonces, used session challenges) and the rate-limit buckets are
the same on every node (THREATS #5, #18):

* sessions, tickets: ``SET ... PX`` with the record's lifetime; single-use
  takes are ``GETDEL`` inside a script, so two nodes can never both consume
  one ticket. A device's sessions and tickets are indexed
  in a set, so a revocation drops them all in one step on every node.
* nonces: ``SET key 1 NX PX ttl``; the caller's TTL is twice the freshness
  window, so no timestamp still inside the window outlives its nonce. A used
  session challenge is such a nonce, so two nodes never both accept one.
* token buckets: a Lua script on Redis's own clock (``TIME``), so a limit is
  global across nodes and clock skew between nodes cannot refill a bucket.
* presence records: one key per (space, device) with the record's lifetime
  (``SET ... PX``) and a per-space index set of device ids; one script counts
  the live records and writes (the per-space bound holds across nodes), one
  reads them and prunes the index of expired ones. Presence is not tied to
  the server's ``run_id``: a lost record only means its device publishes again.

Expiry uses Redis TTLs (relative: ``expires_ms - now_ms``), so nodes with
skewed clocks still agree on when a record dies.

**Lost Redis data fails closed.** Every session and ticket is stored
with the ``run_id`` of the Redis server that holds it, and is refused when the
server's ``run_id`` differs. A restart (with or without persistence) or a
failover therefore ends every session, and a flush erases them: either way a
captured signed request, which is bound to its session token, cannot be
replayed even though the nonces it used may be gone (an RDB restore brings
sessions back but not the nonces recorded after the snapshot).

**Redis unreachable fails closed.** Every operation raises
:class:`~sddsf.errors.UnavailableError` (HTTP 503, code ``unavailable``): no
session, no signed request and no WebSocket ticket is accepted without the
shared replay cache, and nothing is acknowledged. Revocation does not depend on
Redis (the relay checks the registry in the database on every request).

Requirements: one Redis primary (6.2 or later; Redis Cluster is not
supported, the scripts touch several keys), ``maxmemory-policy noeviction`` (an
evicted nonce could allow a replay; with ``noeviction`` a full Redis refuses
writes, which fails closed).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sddsf.errors import ConfigError, UnavailableError
from sddsf.relay.edge import EdgeState, Session

__all__ = ["RedisEdgeState"]

_T = TypeVar("_T")
_RUN_ID_SIZE: Final = 40
_ID: Final = 32

# The server's run_id, read inside each script: a record stored by another
# server run is treated as absent (see the module docstring).
_RUN_ID_LUA: Final = """
if redis.replicate_commands then redis.replicate_commands() end
local rid = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
"""

# KEYS[1] record, KEYS[2] (optional) the owner's index set; ARGV value, ttl_ms.
_PUT: Final = _RUN_ID_LUA + """
redis.call('SET', KEYS[1], rid .. ARGV[1], 'PX', ARGV[2])
if #KEYS > 1 then
  redis.call('SADD', KEYS[2], KEYS[1])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
end
return 1
"""

# KEYS[1] nonce; ARGV value, ttl_ms. Returns the stored value, or sets it (nil).
_FIRST: Final = """
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# KEYS[1] record; ARGV[1] "1" to consume it. Returns the value or nil.
_GET: Final = _RUN_ID_LUA + """
local v
if ARGV[1] == '1' then v = redis.call('GETDEL', KEYS[1]) else v = redis.call('GET', KEYS[1]) end
if not v then return false end
if string.sub(v, 1, 40) ~= rid then
  redis.call('DEL', KEYS[1])
  return false
end
return string.sub(v, 41)
"""

# KEYS[1] a device's index set: delete every record it names, then the set.
_DROP: Final = """
local n = 0
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do n = n + redis.call('DEL', k) end
redis.call('DEL', KEYS[1])
return n
"""

# KEYS[1] bucket hash; ARGV cost, rate per second, burst. Returns the seconds to
# wait as a string ("0" when the tokens were taken). Redis's clock, not the node's.
_BUCKET: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local tokens = tonumber(b[1]) or burst
local last = tonumber(b[2]) or now
if now > last then tokens = math.min(burst, tokens + (now - last) * rate / 1000) end
if now < last then now = last end
local wait = '0'
if tokens >= cost then
  tokens = tokens - cost
elseif rate > 0 then
  wait = string.format('%.6f', (cost - tokens) / rate)
else
  wait = 'inf'
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ms', now)
local full_ms = 1000
if rate > 0 then full_ms = math.ceil(burst / rate * 1000) + 1000 end
redis.call('PEXPIRE', KEYS[1], full_ms)
return wait
"""


# KEYS[1] a space's index set (the records are KEYS[1] .. ':' .. device hex);
# ARGV device hex, value, ttl_ms, max devices. 1 if stored, 0 if the space is full.
_PRESENCE_PUT: Final = """
local others = 0
for _, d in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', KEYS[1] .. ':' .. d) == 0 then
    redis.call('SREM', KEYS[1], d)
  elseif d ~= ARGV[1] then
    others = others + 1
  end
end
if others >= tonumber(ARGV[4]) then return 0 end
redis.call('SET', KEYS[1] .. ':' .. ARGV[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"""

# KEYS[1] a space's index set. Returns device hex, value, device hex, value, ...
_PRESENCE_GET: Final = """
local out = {}
for _, d in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('GET', KEYS[1] .. ':' .. d)
  if v then
    out[#out + 1] = d
    out[#out + 1] = v
  else
    redis.call('SREM', KEYS[1], d)
  end
end
return out
"""


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(
        f":{parts.password}@", ":***@", 1)))


def _ttl_ms(expires_ms: int, now_ms: int) -> int:
    # Relative TTLs: only the difference of the caller's two readings of its own
    # clock matters, so nodes with skewed clocks agree on lifetimes.
    return max(1, expires_ms - now_ms)


class RedisEdgeState(EdgeState):
    """Edge state shared by every relay process through one Redis server.

    Args:
        url: ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``, ``rediss://...`` or
            ``unix:///PATH``.
        prefix: prepended to every key (several deployments may share a server).
        timeout_s: socket connect and read timeout; a Redis that does not answer
            within it makes the operation fail with ``unavailable``.

    Nothing connects before the first operation.

    Raises:
        ConfigError: a URL redis-py cannot use.
    """

    def __init__(self, url: str, *, prefix: str = "sddsf:edge:",
                 timeout_s: float = 2.0) -> None:
        self.url = url
        self.prefix = prefix.encode()
        self._where = redact_url(url)
        try:
            # One retry, on a fresh connection, only for a broken connection
            # (a restarted server); a timeout is not retried, so a black-holed
            # Redis costs one timeout, not several.
            self._redis = aioredis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 1, supported_errors=(rexc.ConnectionError,)),
                health_check_interval=30)
        except ValueError as exc:
            raise ConfigError(f"cannot use the Redis URL {self._where!r}: {exc}") from None
        self._put = self._redis.register_script(_PUT)
        self._get = self._redis.register_script(_GET)
        self._drop = self._redis.register_script(_DROP)
        self._bucket = self._redis.register_script(_BUCKET)
        self._first = self._redis.register_script(_FIRST)
        self._presence_put = self._redis.register_script(_PRESENCE_PUT)
        self._presence_get = self._redis.register_script(_PRESENCE_GET)

    def __repr__(self) -> str:
        return f"RedisEdgeState({self._where!r}, prefix={self.prefix.decode()!r})"

    def _key(self, kind: str, raw: bytes | str) -> bytes:
        return self.prefix + kind.encode() + b":" + (raw.encode() if isinstance(raw, str)
                                                     else raw.hex().encode())

    async def _run(self, call: Awaitable[_T]) -> _T:
        """Await one Redis call; every Redis or socket failure becomes UnavailableError."""
        try:
            return await call
        except (rexc.RedisError, OSError) as exc:
            # ResponseError covers OOM (a full Redis with noeviction) and READONLY
            # (a replica): both mean "cannot record this now", so fail closed.
            detail = str(exc) or type(exc).__name__
            raise UnavailableError(
                f"the relay's shared edge state (Redis at {self._where}) is unavailable "
                f"({detail}); nothing was accepted, retry later") from exc

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()

    async def ping(self) -> None:
        """One round trip (for readiness checks). Raises UnavailableError."""
        await self._run(self._redis.ping())

    # ------------------------------------------------------------ records
    async def _put_record(self, keys: list[bytes], value: bytes, ttl_ms: int) -> None:
        await self._run(self._put(keys=keys, args=[value, ttl_ms]))

    async def _get_record(self, key: bytes, take: bool) -> bytes | None:
        value: Any = await self._run(self._get(keys=[key], args=["1" if take else "0"]))
        return bytes(value) if value is not None else None

    @staticmethod
    def _encode_session(session: Session) -> bytes:
        return session.account_id + session.device_id + session.expires_ms.to_bytes(8, "big")

    @staticmethod
    def _decode_session(raw: bytes | None) -> Session | None:
        if raw is None or len(raw) != 2 * _ID + 8:
            return None
        return Session(raw[:_ID], raw[_ID:2 * _ID], int.from_bytes(raw[2 * _ID:], "big"))

    async def put_session(self, token_digest: bytes, session: Session, now_ms: int) -> None:
        """See :meth:`EdgeState.put_session`."""
        await self._put_record([self._key("session", token_digest),
                                self._key("device", session.device_id)],
                               self._encode_session(session),
                               _ttl_ms(session.expires_ms, now_ms))

    async def get_session(self, token_digest: bytes, now_ms: int) -> Session | None:
        """See :meth:`EdgeState.get_session` (expiry is the record's Redis TTL)."""
        return self._decode_session(
            await self._get_record(self._key("session", token_digest), take=False))

    async def drop_session(self, token_digest: bytes) -> bool:
        """See :meth:`EdgeState.drop_session` (every node at once)."""
        dropped: Any = await self._run(self._redis.delete(self._key("session", token_digest)))
        return bool(dropped)

    async def drop_device(self, device_id: bytes) -> int:
        """See :meth:`EdgeState.drop_device` (every node at once)."""
        dropped: Any = await self._run(self._drop(keys=[self._key("device", device_id)]))
        return int(dropped)

    async def put_ticket(self, ticket: bytes, session: Session, expires_ms: int,
                         now_ms: int) -> None:
        """See :meth:`EdgeState.put_ticket`."""
        await self._put_record([self._key("ticket", ticket),
                                self._key("device", session.device_id)],
                               self._encode_session(session), _ttl_ms(expires_ms, now_ms))

    async def take_ticket(self, ticket: bytes, now_ms: int) -> Session | None:
        """See :meth:`EdgeState.take_ticket` (``GETDEL``: one node wins)."""
        return self._decode_session(
            await self._get_record(self._key("ticket", ticket), take=True))

    # ------------------------------------------------------- replay, limits
    async def remember_nonce(self, key: bytes, expires_ms: int, now_ms: int) -> bool:
        """See :meth:`EdgeState.remember_nonce` (``SET NX PX``; a full Redis
        raises UnavailableError rather than forgetting a nonce)."""
        stored = await self._run(self._redis.set(self._key("nonce", key), b"1", nx=True,
                                                 px=_ttl_ms(expires_ms, now_ms)))
        return bool(stored)

    async def remember_request(self, key: bytes, tag: bytes, expires_ms: int,
                               now_ms: int) -> tuple[bytes, int] | None:
        """See :meth:`EdgeState.remember_request` (one script: the stored value, or
        set it; the same keys as :meth:`remember_nonce`)."""
        stored: Any = await self._run(self._first(
            keys=[self._key("nonce", key)],
            args=[tag + str(now_ms).encode(), _ttl_ms(expires_ms, now_ms)]))
        if not stored:
            return None
        raw = bytes(stored)
        if len(raw) <= len(tag):  # a plain nonce (remember_nonce): no tag to compare
            return b"", 0
        try:
            return raw[:len(tag)], int(raw[len(tag):])
        except ValueError:
            return b"", 0

    async def take_tokens(self, bucket: str, cost: float, rate_per_s: float, burst: float,
                          now_ms: int) -> float:
        """See :meth:`EdgeState.take_tokens`. The refill runs on Redis's clock
        (``now_ms`` is not used), so every node shares one bucket."""
        wait: Any = await self._run(self._bucket(keys=[self._key("bucket", bucket)],
                                                 args=[repr(float(cost)),
                                                       repr(float(rate_per_s)),
                                                       repr(float(burst))]))
        return float(wait.decode() if isinstance(wait, bytes) else wait)

    # ------------------------------------------------------------ presence
    async def put_presence(self, space_id: bytes, device_id: bytes, value: bytes,
                           expires_ms: int, now_ms: int, *, max_devices: int) -> bool:
        """See :meth:`EdgeState.put_presence` (one script: count, then write)."""
        stored: Any = await self._run(self._presence_put(
            keys=[self._key("presence", space_id)],
            args=[device_id.hex(), value, _ttl_ms(expires_ms, now_ms), max_devices]))
        return bool(stored)

    async def presence(self, space_id: bytes, now_ms: int) -> list[tuple[bytes, bytes]]:
        """See :meth:`EdgeState.presence` (expiry is each record's Redis TTL)."""
        flat: Any = await self._run(self._presence_get(keys=[self._key("presence", space_id)]))
        pairs = [(bytes.fromhex(bytes(flat[i]).decode()), bytes(flat[i + 1]))
                 for i in range(0, len(flat), 2)]
        return sorted(pairs)
