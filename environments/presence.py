"""Who is in which environment right now, across every server process.

A participant is a wallet with at least one connection joined to the environment. With
``REDIS_URL`` set the entries live in Redis (one sorted set per environment, scored by expiry),
so counts are right across processes. Each process refreshes the entries of its own connections
from a background thread every ``REFRESH_EVERY`` seconds; a crashed process's entries expire on
their own after ``ENTRY_TTL``. Without Redis, one process is all there is and a
dictionary suffices.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Protocol

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

ENTRY_TTL = 120  # seconds an entry lives without a refresh
REFRESH_EVERY = 30


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

    While Redis is unreachable, joins and leaves still work: the change is logged and left to
    the refresher thread, and counts fall back to this process's own connections.
    """

    def __init__(self, url: str, prefix: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=5, max_connections=200)
        self._prefix = prefix
        self._own: set[tuple[str, str, str]] = set()  # this process's live entries
        self._own_lock = threading.Lock()
        self._refresher: threading.Thread | None = None

    def _keep_fresh(self) -> None:
        while True:
            time.sleep(REFRESH_EVERY)
            with self._own_lock:
                entries = list(self._own)
            if not entries:
                continue
            try:
                self.refresh(entries)
            except redis.RedisError:
                logger.warning("presence refresh failed; retrying in %s s", REFRESH_EVERY)

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
        try:
            self.refresh([(environment_id, connection, wallet)])
        except redis.RedisError as exc:
            logger.warning("presence add failed (%r); the refresher will retry", exc)

    def remove(self, environment_id: str, connection: str, wallet: str) -> None:
        with self._own_lock:
            self._own.discard((environment_id, connection, wallet))
        try:
            self._redis.zrem(self._key(environment_id), f"{connection}|{wallet}")
        except redis.RedisError as exc:
            logger.warning("presence remove failed (%r); the entry will expire", exc)

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
        try:
            return self._shared_counts(environment_ids)
        except redis.RedisError as exc:
            logger.warning("presence count failed (%r); counting this process only", exc)
            with self._own_lock:
                own = list(self._own)
            return {
                environment_id: len({w for e, _c, w in own if e == environment_id})
                for environment_id in environment_ids
            }

    def members(self, environment_id: str) -> set[str]:
        """The distinct wallets (or other member names) present under ``environment_id``."""
        return self._live_members([environment_id])[environment_id]

    def _shared_counts(self, environment_ids: list[str]) -> dict[str, int]:
        return {key: len(members) for key, members in self._live_members(environment_ids).items()}

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
