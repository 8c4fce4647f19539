"""When and how long to wait before trying a relay request (or a whole sync) again.

One :class:`RetryPolicy` serves the request layer (:class:`~sddsf.client.relay_client.
RelayClient`, used by the CLI and by every library call) and the background
:class:`~sddsf.client.runner.Runner` (between syncs), so both follow the same rules:

* ``429 rate_limited``: wait what the relay's ``Retry-After`` says (never less),
  for every request: the relay refuses a rate-limited request before it does
  anything, so trying it again cannot apply it twice.
* ``503 unavailable`` and connection failures: exponential backoff with jitter,
  for idempotent requests only (a 503 does not prove that nothing was stored).
* Everything else is not retried here: verification failures and refusals are
  answers, not outages.
* Bounded: at most ``attempts`` tries and ``budget_s`` seconds of waiting per
  request; a ``Retry-After`` beyond the budget is handed to the caller at once
  (as the :class:`~sddsf.errors.RateLimitedError`, whose ``retry_after_s`` the
  runner then honours).

The ``stamina`` library was considered; it is not used because its retry hooks are
process-wide (they log every retry at warning level, which a CLI prints, and
register Prometheus metrics in the application's registry) and its sleeps cannot
be replaced in tests.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

from sddsf.errors import RateLimitedError, SddsfError, UnavailableError

__all__ = ["RetryPolicy", "Sleep", "parse_retry_after"]

log = logging.getLogger("sddsf.client")
T = TypeVar("T")
#: ``await sleep(seconds)``; tests pass one that records the waits.
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry rules for relay requests (see the module docstring).

    Attributes:
        attempts: tries of one request, the first included (1: never retry).
        budget_s: most seconds one request may spend waiting between tries.
        base_s: the first backoff; it doubles per try up to ``max_s``.
        max_s: the longest backoff between two tries.
        jitter: each backoff is multiplied by a uniform factor in
            ``[1 - jitter, 1 + jitter]`` (a ``Retry-After`` only ever grows by it).
    """

    attempts: int = 4
    budget_s: float = 30.0
    base_s: float = 0.25
    max_s: float = 8.0
    jitter: float = 0.5

    def backoff(self, attempt: int) -> float:
        """The jittered exponential backoff after failed try number ``attempt``.

        Args:
            attempt: The number of the try that failed, counted from 1.

        Returns:
            Seconds to wait: ``base_s * 2**(attempt-1)`` capped at ``max_s``, times a
            random factor within ``1 ± jitter``.

        Raises:
            Nothing of its own.
        """
        raw = min(self.max_s, self.base_s * 2.0 ** max(0, attempt - 1))
        return raw * random.uniform(1.0 - self.jitter, 1.0 + self.jitter)  # noqa: S311

    def wait_for(self, exc: BaseException, attempt: int, *, idempotent: bool = True
                 ) -> float | None:
        """How long to wait before trying again after ``exc``, if at all.

        A ``RateLimitedError`` (429) is retried no earlier than the relay's
        ``Retry-After``; an ``UnavailableError`` (503, a dropped connection) is
        retried with backoff only when the request is idempotent; every other
        error is final.

        Args:
            exc: The error the try ended with.
            attempt: The number of that try, counted from 1.
            idempotent: Whether repeating the request cannot apply it twice.

        Returns:
            Seconds to wait, or None when ``exc`` is not worth another try.

        Raises:
            Nothing of its own.
        """
        if isinstance(exc, RateLimitedError):
            # Never earlier than the relay asked; a little later spreads the herd.
            return exc.retry_after_s * random.uniform(1.0, 1.0 + self.jitter / 5)  # noqa: S311
        if isinstance(exc, UnavailableError) and idempotent:
            return self.backoff(attempt)
        return None

    async def run(self, call: Callable[[], Awaitable[T]], *, idempotent: bool,
                  what: str = "request", sleep: Sleep = asyncio.sleep,
                  clock: Callable[[], float] = time.monotonic) -> T:
        """Await ``call()``, trying again per the policy.

        Args:
            call: makes one fresh try (a signed request is signed again each time).
            idempotent: whether repeating ``call`` after an unknown outcome is safe.
            what: names the request in log lines.
            sleep: how to wait (``asyncio.sleep``).
            clock: monotonic seconds, for the budget.

        Returns:
            What the first successful try returned.

        Raises:
            SddsfError: the last try's error, when it is not retried, the tries
                are used up, or the next wait would exceed the budget.
        """
        waited = 0.0
        attempt = 1
        while True:
            started = clock()
            try:
                return await call()
            except SddsfError as exc:
                wait = self.wait_for(exc, attempt, idempotent=idempotent)
                if wait is None or attempt >= self.attempts or waited + wait > self.budget_s:
                    raise
                log.info("%s failed (%s); try %d of %d in %.1f s", what, exc, attempt + 1,
                         self.attempts, wait)
            await sleep(wait)
            waited += wait + max(0.0, clock() - started)
            attempt += 1


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date).

    Args:
        value: The header's value, or None when the response had none.
        now: The current POSIX time (for an HTTP date); defaults to the clock.

    Returns:
        Seconds to wait, never negative; None when the header is absent or
        unreadable.

    Raises:
        Nothing of its own.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    reference = time.time() if now is None else now
    return max(0.0, when.timestamp() - reference)
