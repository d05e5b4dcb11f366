"""The rate limiter while Redis is down: limits hold per process, nothing waits, one warning.

The documented choice (docs/architecture.md, "Limits and faults"): at the first failure the
shared breaker opens and every process counts messages in its own window until Redis answers
again; Redis is tried again once per cool-down, off nothing but that one message.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from kernel.breaker import Breaker
from kernel.ratelimit import _SLIDING_WINDOW, RedisLimiter
from tests.e2e.conftest import free_port


class Flaky:
    """Stands in for the limiter's Lua script: fails while ``down``, counting the attempts."""

    def __init__(self, real) -> None:
        self.real = real
        self.down = True
        self.attempts = 0

    async def __call__(self, **kwargs):
        self.attempts += 1
        if self.down:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379")
        return await self.real(**kwargs)


@pytest.fixture
def breaker() -> Breaker:
    return Breaker("Redis", cooldown=0.2)


def limiter_for(url: str, breaker: Breaker, limit: int = 3) -> RedisLimiter:
    return RedisLimiter(url, f"test-{uuid.uuid4().hex}", limit, 60, breaker=breaker)


async def test_with_redis_unreachable_the_limit_holds_per_process_without_waiting(breaker, caplog):
    caplog.set_level(logging.INFO)
    limiter = limiter_for(f"redis://127.0.0.1:{free_port()}/0", breaker)  # nothing listens
    started = time.monotonic()
    grants = [await limiter.acquire("wallet:a") for _ in range(5)]
    elapsed = time.monotonic() - started
    assert [grant.granted for grant in grants] == [1, 1, 1, 0, 0]
    assert 0 < grants[-1].retry_after_ms <= 60_000
    assert (await limiter.acquire("wallet:b")).granted == 1  # another wallet has its own window
    assert breaker.down
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1 and "Redis unavailable" in records[0].getMessage()
    assert records[0].exc_info is None  # no traceback
    print(f"6 checks against a dead Redis took {elapsed * 1000:.1f} ms")


async def test_redis_is_retried_after_the_cool_down_and_its_return_logged_once(
    redis_url, breaker, caplog
):
    caplog.set_level(logging.INFO)
    limiter = limiter_for(redis_url, breaker, limit=100)
    flaky = Flaky(limiter._client().register_script(_SLIDING_WINDOW))
    limiter._script = flaky

    for _ in range(20):
        assert (await limiter.acquire("wallet:a")).granted == 1
    assert flaky.attempts == 1  # the breaker opened at once: no message waited on Redis again

    flaky.down = False
    await asyncio.sleep(0.25)  # the cool-down
    assert (await limiter.acquire("wallet:a")).granted == 1
    assert not breaker.down
    assert flaky.attempts == 2
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "kernel.breaker"]
    assert [level for level, _ in messages] == ["WARNING", "INFO"]
    assert "available again" in messages[1][1]
    # Back on Redis: the window is shared again (one message counted there so far).
    other = limiter_for(redis_url, Breaker("Redis"), limit=100)
    other.prefix = limiter.prefix
    assert (await other.acquire("wallet:a", 100)).granted == 99


def test_only_a_failure_to_reach_redis_opens_the_breaker(caplog):
    """A bug in a call (a bad argument, a script error) is logged as such, not as an outage."""
    breaker = Breaker("Redis")
    breaker.failed(TypeError("bad group name"))
    assert not breaker.down
    assert any(r.levelname == "ERROR" and r.exc_info for r in caplog.records)
    breaker.failed(RedisConnectionError("Error 111 connecting to 127.0.0.1:6379"))
    assert breaker.down


# --- taking messages ahead (leases) -----------------------------------------------------------


class Counting:
    """The limiter's script, counting the calls that reach Redis."""

    def __init__(self, real) -> None:
        self.real = real
        self.calls = 0

    async def __call__(self, **kwargs):
        self.calls += 1
        return await self.real(**kwargs)


def counted(limiter: RedisLimiter) -> Counting:
    client = limiter._client()
    counting = Counting(client.register_script(_SLIDING_WINDOW))
    limiter._script = counting
    return counting


async def test_a_fast_sender_asks_redis_for_a_few_of_its_messages_only(redis_url, breaker):
    limiter = limiter_for(redis_url, breaker, limit=1000)
    calls = counted(limiter)
    grants = [await limiter.acquire("wallet:fast") for _ in range(200)]
    assert all(grant.granted == 1 for grant in grants)
    assert calls.calls <= 20  # leases of 1, 2, 4 ... 20 messages


async def test_leases_never_let_a_key_past_its_limit(redis_url, breaker):
    limiter = limiter_for(redis_url, breaker, limit=50)
    grants = [await limiter.acquire("wallet:greedy") for _ in range(80)]
    assert [grant.granted for grant in grants] == [1] * 50 + [0] * 30
    assert all(0 < grant.retry_after_ms <= 60_000 for grant in grants[50:])


async def test_two_processes_together_stay_within_the_limit(redis_url, breaker):
    prefix = f"test-{uuid.uuid4().hex}"
    one, two = (RedisLimiter(redis_url, prefix, 60, 60, breaker=breaker) for _ in range(2))
    granted = 0
    for _ in range(60):  # the same wallet on two server processes, interleaved
        granted += (await one.acquire("wallet:both")).granted
        granted += (await two.acquire("wallet:both")).granted
    assert 50 <= granted <= 60  # never past; leased but unsent messages may end it early


async def test_a_slow_sender_asks_every_time_and_wastes_nothing(redis_url, breaker, monkeypatch):
    from kernel import ratelimit

    limiter = limiter_for(redis_url, breaker, limit=5)
    calls = counted(limiter)
    clock = [1000.0]
    monkeypatch.setattr(ratelimit, "_clock", lambda: clock[0])
    grants = []
    for _ in range(5):  # one message every 1.5 s: no lease outlives the pace's second
        grants.append(await limiter.acquire("wallet:slow"))
        clock[0] += 1.5
    assert [grant.granted for grant in grants] == [1] * 5  # all five of the limit usable
    assert calls.calls == 5
