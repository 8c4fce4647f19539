"""The shared retry policy: what is retried, how long it waits, and when it stops."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from sddsf.client.retry import RetryPolicy, parse_retry_after
from sddsf.errors import ProofError, RateLimitedError, SddsfError, UnavailableError


class Calls:
    """A request that fails with the given errors, then answers "ok"."""

    def __init__(self, *errors: SddsfError) -> None:
        self.errors = list(errors)
        self.count = 0
        self.waits: list[float] = []

    async def __call__(self) -> str:
        self.count += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


async def test_429_waits_for_retry_after_even_for_a_non_idempotent_request() -> None:
    calls = Calls(RateLimitedError("slow down", retry_after_s=7.0))
    assert await RetryPolicy().run(calls, idempotent=False, sleep=calls.sleep) == "ok"
    assert calls.count == 2 and 7.0 <= calls.waits[0] <= 7.7


async def test_503_is_retried_with_backoff_only_when_idempotent() -> None:
    calls = Calls(UnavailableError("down"), UnavailableError("down"))
    assert await RetryPolicy().run(calls, idempotent=True, sleep=calls.sleep) == "ok"
    assert calls.count == 3 and calls.waits[0] < calls.waits[1] * 2  # grows, jittered
    once = Calls(UnavailableError("down"))
    with pytest.raises(UnavailableError):
        await RetryPolicy().run(once, idempotent=False, sleep=once.sleep)
    assert once.count == 1 and once.waits == []


async def test_answers_are_not_retried_and_tries_and_time_are_bounded() -> None:
    refused = Calls(ProofError("a lie"))
    with pytest.raises(ProofError):
        await RetryPolicy().run(refused, idempotent=True, sleep=refused.sleep)
    assert refused.count == 1
    always = Calls(*[UnavailableError("down")] * 10)
    with pytest.raises(UnavailableError):
        await RetryPolicy(attempts=3).run(always, idempotent=True, sleep=always.sleep)
    assert always.count == 3
    too_long = Calls(RateLimitedError("later", retry_after_s=3600.0))
    with pytest.raises(RateLimitedError) as info:  # handed to the caller at once
        await RetryPolicy(budget_s=30).run(too_long, idempotent=True, sleep=too_long.sleep)
    assert too_long.count == 1 and info.value.retry_after_s == 3600.0


def test_retry_after_header_forms() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = 1_800_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0


async def test_a_relay_that_refuses_connections_gets_the_policys_tries_not_more() -> None:
    """An authenticated request to a relay that is down: the session opening and
    the request are one request's tries, not tries of tries (each opening's own
    retries inside each retry of the request made 16 connections and about 9 s
    of waiting, past ``sddsf status``'s 10 s probe under load)."""
    import httpx
    from relaykit import World

    from sddsf.client.relay_client import RelayClient

    tried: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        tried.append(request.url.path)
        raise httpx.ConnectError("connection refused", request=request)

    world = World()
    client = RelayClient("http://127.0.0.1:9", device=world.devices[0],
                         account_id=world.account.account_id,
                         transport=httpx.MockTransport(refuse))
    waits = Calls()
    client.sleep = waits.sleep
    try:
        with pytest.raises(UnavailableError, match="cannot reach the relay"):
            await client.list_spaces()
    finally:
        await client.aclose()
    policy = RetryPolicy()
    assert tried == ["/v1/auth/challenge"] * policy.attempts, tried
    assert len(waits.waits) == policy.attempts - 1, waits.waits
