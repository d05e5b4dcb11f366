"""Who is in which environment right now, across every server process.

A participant is a wallet with at least one connection joined to the environment. With
``REDIS_URL`` set the entries live in Redis, so counts are right across processes:

- ``<prefix>:present:<environment>:<wallet>``, a sorted set of the wallet's connections there,
  each scored by its expiry;
- ``<prefix>:present:<environment>``, a sorted set of the wallets, each scored by the latest
  expiry among its connections. A count is one ``ZCOUNT`` of the scores still ahead (a
  logarithmic lookup, whatever the size of the room), never a read of the set.

Joins and leaves keep the two in step in one script each. Each process refreshes the entries of
its own connections from a background thread every ``REFRESH_EVERY`` seconds; a crashed
process's connections stop being refreshed, so their scores (and a wallet's, once it has no
other connection) fall behind the clock after ``ENTRY_TTL`` and stop counting. Without Redis,
one process is all there is and a dictionary suffices.

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
from typing import Protocol, TypeVar, cast

import redis
from django.conf import settings

from kernel import redis as shared_redis
from kernel.breaker import Breaker, redis_breaker

logger = logging.getLogger(__name__)

ENTRY_TTL = 120  # seconds an entry lives without a refresh
REFRESH_EVERY = 30

T = TypeVar("T")

# KEYS: the environment's wallets, the wallet's connections there. ARGV: now (ms), expiry (ms),
# key lifetime (ms), connection, wallet. Marks the connection present (or extends it) and
# returns the environment's participants.
_ENTER = """
local now, expiry, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], expiry, ARGV[4])
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[1], 'GT', expiry, ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""

# The same keys; ARGV: now (ms), connection, wallet. The wallet stays, scored by its latest
# remaining connection, while it has one; else it leaves.
_LEAVE = """
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local latest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if latest[2] then
    redis.call('ZADD', KEYS[1], latest[2], ARGV[3])
else
    redis.call('ZREM', KEYS[1], ARGV[3])
end
return 0
"""


class Presence(Protocol):
    def add(self, environment_id: str, connection: str, wallet: str) -> int: ...
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

    def add(self, environment_id: str, connection: str, wallet: str) -> int:
        """Mark ``connection`` of ``wallet`` present; return the participants now."""
        with self._lock:
            self._entries[environment_id][connection] = wallet
        return self.count(environment_id)

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
        self._redis = shared_redis.sync_client(url)
        self._enter = self._redis.register_script(_ENTER)
        self._leave = self._redis.register_script(_LEAVE)
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

    def _own_count(self, environment_id: str) -> int:
        return len({w for e, _c, w in self._own_entries() if e == environment_id})

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

    def _keys(self, environment_id: str, wallet: str) -> list[str]:
        wallets = self._wallets_key(environment_id)
        return [wallets, f"{wallets}:{wallet}"]

    def _wallets_key(self, environment_id: str) -> str:
        return f"{self._prefix}:present:{environment_id}"

    def add(self, environment_id: str, connection: str, wallet: str) -> int:
        """Mark ``connection`` of ``wallet`` present; return the participants now (one round
        trip)."""
        with self._own_lock:
            self._own.add((environment_id, connection, wallet))
            if self._refresher is None:
                self._refresher = threading.Thread(
                    target=self._keep_fresh, name="presence-refresh", daemon=True
                )
                self._refresher.start()
        now = _now_ms()
        count = self._shared(
            lambda: self._enter(
                keys=self._keys(environment_id, wallet),
                args=[now, now + ENTRY_TTL * 1000, ENTRY_TTL * 2000, connection, wallet],
                client=self._redis,
            ),
            None,
        )
        return self._own_count(environment_id) if count is None else int(count)

    def remove(self, environment_id: str, connection: str, wallet: str) -> None:
        with self._own_lock:
            self._own.discard((environment_id, connection, wallet))
        self._shared(
            lambda: self._leave(
                keys=self._keys(environment_id, wallet),
                args=[_now_ms(), connection, wallet],
                client=self._redis,
            ),
            None,
        )

    def refresh(self, entries: Iterable[tuple[str, str, str]]) -> None:
        now = _now_ms()
        args = [now, now + ENTRY_TTL * 1000, ENTRY_TTL * 2000]
        pipe = self._redis.pipeline(transaction=False)
        for environment_id, connection, wallet in entries:
            self._enter(
                keys=self._keys(environment_id, wallet),
                args=[*args, connection, wallet],
                client=pipe,
            )
        pipe.execute()

    def count(self, environment_id: str) -> int:
        return self.counts([environment_id])[environment_id]

    def counts(self, environment_ids: list[str]) -> dict[str, int]:
        """Each environment's participants, in one round trip."""
        if not environment_ids:
            return {}
        shared = self._shared(lambda: self._counted(environment_ids), None)
        if shared is not None:
            return shared
        return {
            environment_id: self._own_count(environment_id) for environment_id in environment_ids
        }

    def _counted(self, environment_ids: list[str]) -> dict[str, int]:
        live = f"({_now_ms()}"
        pipe = self._redis.pipeline(transaction=False)
        for environment_id in environment_ids:
            pipe.zcount(self._wallets_key(environment_id), live, "+inf")
        return dict(zip(environment_ids, pipe.execute(), strict=True))

    def members(self, environment_id: str) -> set[str]:
        """The distinct wallets (or other member names) present under ``environment_id``."""
        key = self._wallets_key(environment_id)
        shared = self._shared(lambda: self._redis.zrangebyscore(key, f"({_now_ms()}", "+inf"), None)
        if shared is not None:
            return {member.decode() for member in cast(list[bytes], shared)}
        return {w for e, _c, w in self._own_entries() if e == environment_id}


def _now_ms() -> int:
    return int(time.time() * 1000)


@functools.cache
def backend() -> Presence:
    if settings.REDIS_URL:
        return RedisPresence(settings.REDIS_URL, settings.FUNPUMP_REDIS_PREFIX)
    return LocalPresence()
