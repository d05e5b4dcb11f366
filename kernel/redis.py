"""The process's Redis connections: one bounded pool for everything the application does.

The rate limiter, connection caps, presence, the market snapshot and interest, and the health
check all draw on the pools made here, one per Redis URL and process (``REDIS_URL`` in
production; tests also name unreachable ones):

- :func:`sync_client` for code on ORM threads (presence, the market snapshot): a thread-safe
  client over one blocking pool;
- :func:`async_client` for code on the event loop (rate limits, caps, health): a
  ``redis.asyncio`` connection belongs to the loop that opened it, so there is one pool per
  running loop (one in a server; pytest-asyncio opens one per test).

A pool opens connections as calls need them, up to its bound; a call that finds them all busy
waits for one (:data:`POOL_WAIT` at most) instead of opening another, and past that fails with
:class:`Congested`, which the breaker does not take for Redis being down. Nothing here goes through
Django's ``caches``: Django makes a cache object per async context, so a lookup from a socket's
handler would open a pool, and a connection, per socket. The Django cache (DRF's sign-in
throttle) shares the synchronous pool too (:class:`SharedCachePool`). The channel layer keeps its
own pool (:class:`RedisChannelLayer`), as blocking and bounded as these.

Every connection is named ``funpump:<pid>`` (``CLIENT SETNAME``), so ``CLIENT LIST`` shows what
each process holds.
"""

from __future__ import annotations

import asyncio
import os
import queue
from typing import Any

import redis
import redis.asyncio as aioredis
from channels_redis import core as channels_redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

# One command is well under a millisecond: anything much slower means Redis is in trouble, and
# the caller falls back to what this process knows (kernel/breaker.py) rather than wait.
TIMEOUT = 0.5
CONNECT_TIMEOUT = 0.25
# Connections per pool. ORM threads are few (the default executor's) and each call is one
# round trip; the event loop pipelines nothing across sockets but holds a connection only for
# the round trip, so a handful serves thousands of sockets.
SYNC_CONNECTIONS = 4
ASYNC_CONNECTIONS = 8
# Seconds a call waits for a pooled connection before it counts as Redis not answering.
POOL_WAIT = 2.0


class Congested(RedisError):
    """Every connection of a pool stayed busy for :data:`POOL_WAIT`: this process has more Redis
    calls in flight than its pool serves, which says nothing about Redis itself."""


class _Pool(redis.BlockingConnectionPool):
    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except redis.ConnectionError as exc:
            if isinstance(exc.__context__, queue.Empty):  # the wait, not a connect, failed
                raise Congested("no pooled connection came free") from exc
            raise


class _AsyncPool(aioredis.BlockingConnectionPool):
    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except redis.ConnectionError as exc:
            if isinstance(exc.__cause__, TimeoutError):  # the wait, not a connect, failed
                raise Congested("no pooled connection came free") from exc
            raise


def client_name() -> str:
    """The name this process's connections carry (``CLIENT LIST``'s ``name=``)."""
    return f"funpump:{os.getpid()}"


def _options() -> dict[str, Any]:
    return {
        "socket_timeout": TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "client_name": client_name(),
    }


# Keyed by process too: a forked child must not share its parent's sockets, and names its own.
_sync_clients: dict[tuple[str, int], redis.Redis] = {}
_async_clients: dict[tuple[str, int, asyncio.AbstractEventLoop], aioredis.Redis] = {}


def sync_pool(url: str) -> redis.ConnectionPool:
    """This process's synchronous pool for ``url``."""
    return sync_client(url).connection_pool


def sync_client(url: str) -> redis.Redis:
    """A client on this process's synchronous pool for ``url`` (safe from any thread)."""
    key = (url, os.getpid())
    client = _sync_clients.get(key)
    if client is None:
        pool = _Pool.from_url(
            url,
            max_connections=SYNC_CONNECTIONS,
            timeout=POOL_WAIT,
            # redis-py retries a failed command 10 times with backoff by default (about 2 s
            # against a stopped server): one immediate retry covers a pooled connection left
            # stale by a Redis restart, and nothing more waits on a dead server.
            retry=Retry(NoBackoff(), 1),
            **_options(),
        )
        client = _sync_clients.setdefault(key, redis.Redis(connection_pool=pool))
    return client


def async_client(url: str) -> aioredis.Redis:
    """A client on this process's pool for ``url`` and the running event loop."""
    loop = asyncio.get_running_loop()
    key = (url, os.getpid(), loop)
    client = _async_clients.get(key)
    if client is None:
        for stale in [known for known in _async_clients if known[2].is_closed()]:
            del _async_clients[stale]  # its loop is gone, and its connections with it
        pool = _AsyncPool.from_url(
            url,
            max_connections=ASYNC_CONNECTIONS,
            timeout=POOL_WAIT,
            retry=AsyncRetry(NoBackoff(), 1),
            **_options(),
        )
        client = _async_clients[key] = aioredis.Redis(connection_pool=pool)
    return client


class SharedCachePool(redis.BlockingConnectionPool):
    """``CACHES["default"]["OPTIONS"]["pool_class"]``: Django's Redis cache on this process's
    synchronous pool, instead of a new pool for each async context's cache object."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> redis.ConnectionPool:  # type: ignore[override]
        return sync_pool(url)


class RedisChannelLayer(channels_redis.RedisChannelLayer):  # type: ignore[misc]
    """channels-redis on a blocking pool: past the host's ``max_connections`` a layer call waits
    for a connection (up to the host's ``timeout``) instead of failing with "Too many
    connections", which the hub would take for Redis being down."""

    def create_pool(self, index: int) -> aioredis.BlockingConnectionPool:
        host = {**self.hosts[index], "client_name": client_name()}
        return aioredis.BlockingConnectionPool.from_url(host.pop("address"), **host)
