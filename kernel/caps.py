"""Caps on what one client may hold, so no client can exhaust the server for the others.

- **Connections** per wallet (``FUNPUMP_MAX_CONNECTIONS_PER_WALLET``) and per client address
  (``FUNPUMP_MAX_CONNECTIONS_PER_IP``), counted across every server process when ``REDIS_URL``
  is set: one sorted set per owner holds its connection ids scored by expiry. Each process
  refreshes its own entries every ``REFRESH_EVERY`` seconds, so the entries of a process that
  crashed expire after ``SLOT_TTL`` instead of holding the slots. While Redis is down (the shared
  breaker of :mod:`kernel.breaker` is open) each process counts only its own connections, and
  its refresher writes them back once Redis answers again.
- **Holdings** per wallet across its connections in this process: environments joined
  (``FUNPUMP_MAX_JOINED_ENVIRONMENTS``) and price subscriptions (``FUNPUMP_MAX_SUBSCRIPTIONS``).
  An anonymous connection's holdings are its own.
- **Inbound bytes** per connection (:class:`InboundBudget`): a token bucket of
  ``FUNPUMP_INBOUND_BYTES_PER_SECOND`` with a burst of ``FUNPUMP_INBOUND_BURST_BYTES``, and a
  bound on the frames waiting for the application (``FUNPUMP_INBOUND_QUEUE_FRAMES`` and
  ``FUNPUMP_INBOUND_QUEUE_BYTES``). Over either, the server stops reading the socket until it is
  back under, so a fast sender is slowed by TCP and its frames wait in its own kernel buffers,
  never in the server's memory. Heartbeats count like every other frame.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Hashable
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError

from kernel import redis as shared_redis
from kernel.breaker import Breaker, redis_breaker

logger = logging.getLogger(__name__)

SLOT_TTL = 120  # seconds a connection's slot lives in Redis without a refresh
REFRESH_EVERY = 30

# KEYS: one sorted set per owner; ARGV: now (ms), expiry (ms), ttl (ms), connection id, then one
# cap per key. Takes a slot in every key, or in none: returns 0, or the 1-based index of the
# first key whose cap is reached.
_TAKE = """
local now, expiry, ttl, member = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
for i, key in ipairs(KEYS) do
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if not redis.call('ZSCORE', key, member) then
        if redis.call('ZCARD', key) >= tonumber(ARGV[4 + i]) then
            return i
        end
    end
end
for _, key in ipairs(KEYS) do
    redis.call('ZADD', key, expiry, member)
    redis.call('PEXPIRE', key, ttl)
end
return 0
"""


def client_address(scope: dict[str, Any]) -> str | None:
    """The client's address as HTTP throttling sees it (DRF's rule, ``DJANGO_NUM_PROXIES``).

    Behind proxies daphne's peer is the proxy, which would put every client under one cap; the
    address the nearest trusted proxy saw is the last but ``NUM_PROXIES - 1`` in
    ``X-Forwarded-For`` (those further left are the client's own say, and forgeable).
    """
    proxies = int(settings.NUM_PROXIES)
    if proxies:
        forwarded: bytes = dict(scope.get("headers", [])).get(b"x-forwarded-for", b"")
        parts = forwarded.decode("latin-1").split(",")
        addresses = [part.strip() for part in parts if part.strip()]
        if addresses:
            return addresses[-min(proxies, len(addresses))]
    client = scope.get("client")
    return str(client[0]) if client else None


def connection_owners(wallet: str | None, client_ip: str | None) -> list[tuple[str, int]]:
    """The owners a new connection counts against, each with its cap (0: no cap)."""
    owners = []
    if wallet:
        owners.append((f"wallet:{wallet}", settings.FUNPUMP_MAX_CONNECTIONS_PER_WALLET))
    if client_ip and not _loopback(client_ip):
        owners.append((f"ip:{client_ip}", settings.FUNPUMP_MAX_CONNECTIONS_PER_IP))
    return [(owner, cap) for owner, cap in owners if cap > 0]


def _loopback(address: str) -> bool:
    # This machine's own clients (a local proxy not declared in NUM_PROXIES, benchmarks, tests)
    # would all share one address: capping it would cap the whole service.
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class ConnectionSlots:
    """Connection slots per owner (``wallet:<address>``, ``ip:<address>``).

    :attr:`local` always holds this process's own connections: it is the count while Redis is
    not configured or down, and what the refresher writes back.
    """

    def __init__(self, url: str = "", prefix: str = "", breaker: Breaker = redis_breaker) -> None:
        self.url = url
        self.prefix = prefix
        self.breaker = breaker
        self.local: dict[str, set[str]] = defaultdict(set)
        self._lock = threading.Lock()
        self._script: Any = None  # registered once; each call names the loop's client
        self._refreshers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}

    async def take(self, connection: str, owners: list[tuple[str, int]]) -> str | None:
        """Take a slot for ``connection`` under every owner; return the owner whose cap is
        reached (nothing taken), or None."""
        if not owners:
            return None
        refused = None
        if self.url and self.breaker.should_try():
            try:
                refused = await self._take_shared(connection, owners)
            except (RedisError, OSError, TimeoutError) as exc:
                self.breaker.failed(exc)
                refused = self._take_local_check(connection, owners)
            else:
                self.breaker.succeeded()
            self._start_refresher()
        else:
            refused = self._take_local_check(connection, owners)
        if refused is None:
            with self._lock:
                for owner, _ in owners:
                    self.local[owner].add(connection)
        return refused

    def _take_local_check(self, connection: str, owners: list[tuple[str, int]]) -> str | None:
        with self._lock:
            for owner, cap in owners:
                held = self.local.get(owner, set())
                if connection not in held and len(held) >= cap:
                    return owner
        return None

    async def _take_shared(self, connection: str, owners: list[tuple[str, int]]) -> str | None:
        now = int(time.time() * 1000)
        client = self._client()
        if self._script is None:
            self._script = client.register_script(_TAKE)
        index = int(
            await self._script(
                keys=[self._key(owner) for owner, _ in owners],
                args=[now, now + SLOT_TTL * 1000, SLOT_TTL * 1000, connection]
                + [cap for _, cap in owners],
                client=client,
            )
        )
        return owners[index - 1][0] if index else None

    async def give_back(self, connection: str, owners: list[str]) -> None:
        """Free ``connection``'s slots (a slot Redis cannot be told about expires by itself)."""
        with self._lock:
            for owner in owners:
                held = self.local.get(owner)
                if held is not None:
                    held.discard(connection)
                    if not held:
                        del self.local[owner]
        if not owners or not self.url or not self.breaker.should_try():
            return
        try:
            client = self._client()
            async with client.pipeline(transaction=False) as pipe:
                for owner in owners:
                    pipe.zrem(self._key(owner), connection)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failed(exc)
        else:
            self.breaker.succeeded()

    async def refresh(self) -> None:
        """Extend this process's slots in Redis (and write them back after an outage)."""
        with self._lock:
            entries = [(owner, sorted(held)) for owner, held in self.local.items()]
        if not entries or not self.url or not self.breaker.should_try():
            return
        expiry = int(time.time() * 1000) + SLOT_TTL * 1000
        try:
            client = self._client()
            async with client.pipeline(transaction=False) as pipe:
                for owner, connections in entries:
                    pipe.zadd(self._key(owner), dict.fromkeys(connections, expiry))
                    pipe.pexpire(self._key(owner), SLOT_TTL * 1000)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failed(exc)
        else:
            self.breaker.succeeded()

    def _key(self, owner: str) -> str:
        return f"{self.prefix}:connections:{owner}"

    def _client(self) -> Any:
        """The process's client for the running loop (kernel/redis.py)."""
        return shared_redis.async_client(self.url)

    def _start_refresher(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._refreshers.get(loop)
        if task is None or task.done():
            for old in [known for known in self._refreshers if known.is_closed()]:
                del self._refreshers[old]
            self._refreshers[loop] = loop.create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_EVERY)
            try:
                await self.refresh()
            except Exception:
                logger.exception("refreshing connection slots failed")


_slots: dict[str, ConnectionSlots] = {}


def connection_slots() -> ConnectionSlots:
    """This process's connection slots (in Redis where it is configured)."""
    key = f"{settings.REDIS_URL}|{settings.FUNPUMP_REDIS_PREFIX}"
    slots = _slots.get(key)
    if slots is None:
        slots = _slots[key] = ConnectionSlots(settings.REDIS_URL, settings.FUNPUMP_REDIS_PREFIX)
    return slots


class Holdings:
    """Distinct items (environments, subscriptions) each owner holds across its connections in
    this process. Used from the event loop only."""

    def __init__(self) -> None:
        self._items: dict[str, dict[Hashable, set[str]]] = {}

    def admit(self, owner: str, connection: str, item: Hashable, limit: int) -> bool:
        """Record that ``connection`` holds ``item``; False (nothing recorded) when ``owner``
        already holds ``limit`` other items."""
        if not self.allows(owner, item, limit):
            return False
        self.hold(owner, connection, item)
        return True

    def allows(self, owner: str, item: Hashable, limit: int) -> bool:
        """Whether ``owner`` may hold ``item`` (it does already, or holds fewer than ``limit``)."""
        items = self._items.get(owner, {})
        return item in items or len(items) < limit

    def hold(self, owner: str, connection: str, item: Hashable) -> None:
        """Record ``item`` once it is held (checked with :meth:`allows` before the work)."""
        self._items.setdefault(owner, {}).setdefault(item, set()).add(connection)

    def release(self, owner: str, connection: str, item: Hashable) -> None:
        items = self._items.get(owner)
        if items is None or item not in items:
            return
        items[item].discard(connection)
        if not items[item]:
            del items[item]
        if not items:
            del self._items[owner]

    def release_connection(self, owner: str, connection: str) -> None:
        for item in list(self._items.get(owner, {})):
            self.release(owner, connection, item)

    def held(self, owner: str) -> int:
        return len(self._items.get(owner, {}))


JOINED = Holdings()
SUBSCRIBED = Holdings()


class InboundBudget:
    """One connection's inbound bytes: a token bucket plus the frames waiting to be handled.

    The protocol reports each frame as it queues it (:meth:`arrived`) and asks how long to stop
    reading (:meth:`wait`): the time until the bucket is out of debt, or a short poll while too
    many frames or bytes still wait for the application.
    """

    POLL = 0.02  # seconds between checks while the application catches up
    # Every joined socket holds one: slots and a list (a deque is 760 bytes even when empty).
    __slots__ = (
        "burst",
        "clock",
        "max_bytes",
        "max_frames",
        "queued",
        "queued_bytes",
        "rate",
        "tokens",
        "updated",
    )

    def __init__(
        self,
        rate: float,
        burst: float,
        max_frames: int,
        max_bytes: int,
        clock: Any = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.clock = clock
        self.tokens = burst
        self.updated = clock()
        self.queued: list[int] = []  # the sizes of the frames waiting, oldest first
        self.queued_bytes = 0

    @classmethod
    def from_settings(cls) -> InboundBudget:
        return cls(
            rate=settings.FUNPUMP_INBOUND_BYTES_PER_SECOND,
            burst=settings.FUNPUMP_INBOUND_BURST_BYTES,
            max_frames=settings.FUNPUMP_INBOUND_QUEUE_FRAMES,
            max_bytes=settings.FUNPUMP_INBOUND_QUEUE_BYTES,
        )

    def arrived(self, size: int) -> None:
        self._refill()
        self.tokens -= size
        self.queued.append(size)
        self.queued_bytes += size

    def wait(self, waiting_frames: int) -> float:
        """Seconds to stop reading, given how many frames still wait for the application."""
        # Frames leave in order: whatever is gone from the application's queue is the oldest.
        if len(self.queued) > waiting_frames:
            gone = len(self.queued) - waiting_frames
            self.queued_bytes -= sum(self.queued[:gone])
            del self.queued[:gone]
        if len(self.queued) > self.max_frames or self.queued_bytes > self.max_bytes:
            return self.POLL
        if self.rate <= 0:  # no byte budget configured
            return 0.0
        self._refill()
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
