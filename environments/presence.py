"""Who is in which environment right now, across every server process.

A participant is a wallet with at least one connection joined to the environment. With
``REDIS_URL`` set the entries live in Redis (one sorted set per environment, scored by expiry),
so counts are right across processes. Each process refreshes the entries of its own connections
from a background thread every ``REFRESH_EVERY`` seconds; a crashed process's entries expire on
their own after ``ENTRY_TTL``. Without Redis, one process is all there is and a
dictionary suffices.

While Redis is down (the shared breaker of :mod:`kernel.breaker` is open) nothing waits on it:
joins and leaves change only this process's own entries, and counts are this process's own
connections. When Redis answers again the refresher writes this process's entries back at once
(a restarted Redis has lost them); entries of connections that left meanwhile expire.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from kernel.breaker import Breaker, redis_breaker

logger = logging.getLogger(__name__)

ENTRY_TTL = 120  # seconds an entry lives without a refresh
REFRESH_EVERY = 30
REDIS_TIMEOUT = 0.5  # a presence command takes well under a millisecond; slower means trouble

T = TypeVar("T")


class Presence(Protocol):
    def add(self, environment_id: str, connection: str, wallet: str) -> None: ...
    def remove(self, environment_id: str, connection: str, wallet: str) -> None: ...
    def refresh(self, entries: Iterable[tuple[str, str, str]]) -> None: ...
    def count(self, environment_id: str) -> int: ...
    def counts(self, environment_ids: list[str]) -> dict[str, int]: ...
    def members(self, environment_id: str) -> set[str]: ...


class LocalPresence:
    """Single-process presence (the in-memory default)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, str]] = defaultdict(dict)

    def add(self, environment_id: str, connection: str, wallet: str) -> None:
        with self._lock:
            self._entries[environment_id][connection] = wallet

    def remove(self, environment_id: str, connection: str, wallet: str) -> None:
        with self._lock:
            members = self._entries.get(environment_id)
            if members is not None:
                members.pop(connection, None)
                if not members:
                    del self._entries[environment_id]

    def refresh(self, entries: Iterable[tuple[str, str, str]]) -> None:
        return None

    def count(self, environment_id: str) -> int:
        with self._lock:
            return len(set(self._entries.get(environment_id, {}).values()))

    def counts(self, environment_ids: list[str]) -> dict[str, int]:
        return {environment_id: self.count(environment_id) for environment_id in environment_ids}

    def members(self, environment_id: str) -> set[str]:
        with self._lock:
            return set(self._entries.get(environment_id, {}).values())


class RedisPresence:
    """Presence shared by every process through Redis.

    While Redis is unreachable, joins and leaves still work on this process's own entries
    (written back when Redis returns), and counts fall back to this process's own connections.
    """

    def __init__(self, url: str, prefix: str, breaker: Breaker = redis_breaker) -> None:
        # One immediate retry covers a pooled connection left stale by a Redis restart;
        # redis-py's default (10 retries with backoff) would hold a join for seconds.
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), 1),
            max_connections=200,
        )
        self._prefix = prefix
        self._breaker = breaker
        self._own: set[tuple[str, str, str]] = set()  # this process's live entries
        self._own_lock = threading.Lock()
        self._refresher: threading.Thread | None = None
        self._wake = threading.Event()
        breaker.on_recovery(self._wake.set)

    def _keep_fresh(self) -> None:
        while True:
            self._wake.wait(REFRESH_EVERY)
            self._wake.clear()
            entries = self._own_entries()
            if entries:
                self._shared(functools.partial(self.refresh, entries), None)

    def _own_entries(self) -> list[tuple[str, str, str]]:
        with self._own_lock:
            return list(self._own)

    def _shared(self, call: Callable[[], T], fallback: T) -> T:
        """``call()`` on Redis unless the breaker says it is down; ``fallback`` if it fails."""
        if not self._breaker.should_try():
            return fallback
        try:
            result = call()
        except (redis.RedisError, OSError) as exc:
            self._breaker.failed(exc)
            return fallback
        self._breaker.succeeded()
        return result

    def _key(self, environment_id: str) -> str:
        return f"{self._prefix}:presence:{environment_id}"

    def add(self, environment_id: str, connection: str, wallet: str) -> None:
        with self._own_lock:
            self._own.add((environment_id, connection, wallet))
            if self._refresher is None:
                self._refresher = threading.Thread(
                    target=self._keep_fresh, name="presence-refresh", daemon=True
                )
                self._refresher.start()
        self._shared(lambda: self.refresh([(environment_id, connection, wallet)]), None)

    def remove(self, environment_id: str, connection: str, wallet: str) -> None:
        with self._own_lock:
            self._own.discard((environment_id, connection, wallet))
        self._shared(
            lambda: self._redis.zrem(self._key(environment_id), f"{connection}|{wallet}"), None
        )

    def refresh(self, entries: Iterable[tuple[str, str, str]]) -> None:
        expiry = time.time() + ENTRY_TTL
        pipe = self._redis.pipeline(transaction=False)
        for environment_id, connection, wallet in entries:
            key = self._key(environment_id)
            pipe.zadd(key, {f"{connection}|{wallet}": expiry})
            pipe.expire(key, ENTRY_TTL * 2)
        pipe.execute()

    def count(self, environment_id: str) -> int:
        return self.counts([environment_id])[environment_id]

    def counts(self, environment_ids: list[str]) -> dict[str, int]:
        if not environment_ids:
            return {}
        members = self._members(environment_ids)
        return {environment_id: len(members[environment_id]) for environment_id in environment_ids}

    def members(self, environment_id: str) -> set[str]:
        """The distinct wallets (or other member names) present under ``environment_id``."""
        return self._members([environment_id])[environment_id]

    def _members(self, environment_ids: list[str]) -> dict[str, set[str]]:
        shared = self._shared(lambda: self._live_members(environment_ids), None)
        if shared is not None:
            return shared
        own = self._own_entries()
        return {
            environment_id: {w for e, _c, w in own if e == environment_id}
            for environment_id in environment_ids
        }

    def _live_members(self, environment_ids: list[str]) -> dict[str, set[str]]:
        """Drop expired entries, then read each key's distinct member names, in one round trip."""
        now = time.time()
        pipe = self._redis.pipeline(transaction=False)
        for environment_id in environment_ids:
            key = self._key(environment_id)
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zrange(key, 0, -1)
        replies = pipe.execute()
        return {
            environment_id: {entry.rsplit(b"|", 1)[1].decode() for entry in replies[index * 2 + 1]}
            for index, environment_id in enumerate(environment_ids)
        }


@functools.cache
def backend() -> Presence:
    if settings.REDIS_URL:
        return RedisPresence(settings.REDIS_URL, settings.FUNPUMP_REDIS_PREFIX)
    return LocalPresence()
