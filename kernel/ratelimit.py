"""Sliding-window rate limits shared by every connection of a user and every server process.

``FUNPUMP_RATE_LIMIT = "100/60"`` allows 100 messages in any 60 seconds. With Redis the window
is a sorted set of timestamps per key, trimmed and counted by one Lua script, so the check and
the update are atomic across processes. Without Redis a per-process log does the same.

A key that sends fast does not ask Redis for every message: when it asks, the process also
takes as many messages more as the key sent in the last :data:`LEASE_SECONDS` (at most
:data:`LEASE_MAX` and a tenth of the limit, and never past the limit: Redis counts them as used
at once) and spends them locally for up to :data:`LEASE_SECONDS`. Unspent ones simply stay
counted, so a burst that stops at once may be refused up to that many messages early; a slow
sender asks every time, as before.

While Redis is down the limiter does not wait on it and does not let everyone through: the
shared breaker (:mod:`kernel.breaker`) opens at the first failure and each process counts in
its own window (:class:`LocalLimiter`) until Redis answers again, so a wallet keeps its limit
per process (at most one window's worth more per extra process it is connected to). Redis is
tried again once per cool-down, with a short timeout.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings
from redis.exceptions import RedisError

from kernel import redis as shared_redis
from kernel.breaker import Breaker, redis_breaker

# KEYS[1] window key; ARGV: now (ms), window (ms), limit, wanted, unique member prefix.
# Returns {granted, retryAfterMs}.
_SLIDING_WINDOW = """
local key, now, window, limit, wanted = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]),
    tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local used = redis.call('ZCARD', key)
local granted = math.min(wanted, math.max(limit - used, 0))
for i = 1, granted do
    redis.call('ZADD', key, now, ARGV[5] .. ':' .. i)
end
redis.call('PEXPIRE', key, window)
local retry = 0
if granted < wanted then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if oldest[2] then retry = tonumber(oldest[2]) + window - now end
end
return {granted, retry}
"""


LEASE_SECONDS = 1.0
LEASE_MAX = 20  # messages taken ahead per Redis call at most
LEASES_KEPT = 10_000  # keys with a lease before the expired ones are swept
_clock = time.monotonic  # the leases' clock


@dataclass(slots=True)
class _Lease:
    """Messages a key may still send without asking Redis, until ``until``, and how many it
    sent since ``since`` (the size of its next lease)."""

    tokens: int
    until: float
    since: float
    sent: int


def parse_limit(value: str) -> tuple[int, int]:
    """``"100/60"`` → (100, 60): at most 100 in any 60 seconds."""
    count, _, seconds = value.partition("/")
    return int(count), int(seconds or 1)


@dataclass(frozen=True, slots=True)
class Grant:
    """How many of the wanted messages may go through, and when to retry the rest."""

    granted: int
    retry_after_ms: int


class Limiter(Protocol):
    async def acquire(self, key: str, wanted: int = 1) -> Grant: ...


class LocalLimiter:
    """One process's sliding window (the in-memory default)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._log: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    async def acquire(self, key: str, wanted: int = 1) -> Grant:
        now = time.monotonic()
        with self._lock:
            log = self._log[key]
            while log and log[0] <= now - self.window:
                log.popleft()
            granted = min(wanted, max(self.limit - len(log), 0))
            log.extend([now] * granted)
            retry = 0
            if granted < wanted and log:
                retry = math.ceil((log[0] + self.window - now) * 1000)
            if not log:
                del self._log[key]
        return Grant(granted, max(retry, 0))


class RedisLimiter:
    """The window in Redis: every process and connection of a user shares it.

    While the breaker is open (Redis down), :attr:`fallback` counts for this process instead.
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        limit: int,
        window: float,
        breaker: Breaker = redis_breaker,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.limit = limit
        self.window_ms = int(window * 1000)
        self.breaker = breaker
        self.fallback = LocalLimiter(limit, window)
        self._script: Any = None  # registered once; each call names the loop's client
        self._leases: dict[str, _Lease] = {}
        # At most a tenth of the limit ahead: the most a stopped burst can cost a key.
        self.lease_max = min(LEASE_MAX, limit // 10)

    def _client(self) -> Any:
        """The process's client for the running loop (kernel/redis.py)."""
        return shared_redis.async_client(self.url)

    async def acquire(self, key: str, wanted: int = 1) -> Grant:
        if not self.breaker.should_try():
            return await self.fallback.acquire(key, wanted)
        now = _clock()
        lease = self._leases.get(key)
        held = 0  # messages of the lease spent on this call
        if lease is not None:
            if now - lease.since >= LEASE_SECONDS:  # a new second: count the key's pace again
                lease.since, lease.sent = now, 0
            if now < lease.until:
                held = min(lease.tokens, wanted)
                lease.tokens -= held
                lease.sent += held
            if held == wanted:
                return Grant(wanted, 0)
        wanted -= held
        ahead = min(lease.sent if lease is not None else 0, self.lease_max)
        client = self._client()
        if self._script is None:
            self._script = client.register_script(_SLIDING_WINDOW)
        now_ms = int(time.time() * 1000)
        try:
            granted, retry = await self._script(
                keys=[f"{self.prefix}:rate:{key}"],
                args=[
                    now_ms,
                    self.window_ms,
                    self.limit,
                    wanted + ahead,
                    f"{now_ms}:{secrets.token_hex(6)}",
                ],
                client=client,
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failed(exc)
            return await self.fallback.acquire(key, wanted)
        self.breaker.succeeded()
        granted = int(granted)
        given = min(granted, wanted)
        self._lease(key, now, tokens=granted - given, sent=given)
        # Refused ones wait for the window's oldest message to leave it, as Redis says.
        return Grant(held + given, int(retry) if given < wanted else 0)

    def _lease(self, key: str, now: float, *, tokens: int, sent: int) -> None:
        lease = self._leases.get(key)
        if lease is None:
            if len(self._leases) >= LEASES_KEPT:
                self._leases = {
                    kept: held
                    for kept, held in self._leases.items()
                    if now - held.since < LEASE_SECONDS or now < held.until
                }
            self._leases[key] = _Lease(tokens, now + LEASE_SECONDS, now, sent)
            return
        lease.tokens, lease.until = tokens, now + LEASE_SECONDS
        lease.sent += sent


_limiters: dict[str, Limiter] = {}


def rate_limiter(rate: str) -> Limiter:
    """A sliding-window limiter of ``rate`` ("count/seconds"), in Redis when it is configured."""
    key = f"{settings.REDIS_URL}|{rate}"
    limiter = _limiters.get(key)
    if limiter is None:
        limit, window = parse_limit(rate)
        if settings.REDIS_URL:
            limiter = RedisLimiter(settings.REDIS_URL, settings.FUNPUMP_REDIS_PREFIX, limit, window)
        else:
            limiter = LocalLimiter(limit, window)
        _limiters[key] = limiter
    return limiter


def message_limiter() -> Limiter:
    """The limiter of ``FUNPUMP_RATE_LIMIT`` (built once per setting value)."""
    return rate_limiter(str(settings.FUNPUMP_RATE_LIMIT))
