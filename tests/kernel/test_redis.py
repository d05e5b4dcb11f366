"""The process's Redis connections: bounded pools, shared by every socket, none left behind."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import websockets
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.core.cache import cache

from environments import presence
from kernel import redis as shared_redis
from kernel.breaker import Breaker
from tests.conftest import Wallet
from tests.e2e import conftest as e2e

daphne_server = e2e.daphne_server  # the real-server fixture

# Everything one process may hold: its synchronous and asynchronous pools and the channel
# layer's (funpump/settings.py).
PROCESS_BOUND = shared_redis.SYNC_CONNECTIONS + shared_redis.ASYNC_CONNECTIONS + 8


def held_by(observer: redis.Redis, pid: int) -> int:
    """Connections that a process holds in Redis, by the name its connections carry."""
    name = f"funpump:{pid}"
    return sum(1 for client in observer.client_list() if client.get("name") == name)


def sockets_to(port: int, pid: int) -> int:
    """A process's TCP connections to ``port``, named or not (Linux's /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    established = "01"
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if fields[9] in inodes and remote_port == port and fields[3] == established:
                count += 1
    return count


@pytest.fixture
def observer(redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# In process, earlier tests' event loops have pools of their own: these count what is added.


async def test_concurrent_calls_on_the_loop_share_one_bounded_pool(redis_url, observer):
    client = shared_redis.async_client(redis_url)  # drops the pools of earlier, closed loops
    gc.collect()  # their connections close now, not while this test counts
    before = held_by(observer, os.getpid())
    assert shared_redis.async_client(redis_url) is client  # one per loop and URL
    await asyncio.gather(*(client.ping() for _ in range(200)))
    assert 0 < held_by(observer, os.getpid()) - before <= shared_redis.ASYNC_CONNECTIONS


async def test_django_cache_objects_of_every_async_context_share_the_process_pool(
    redis_url, observer
):
    # Django makes a cache object per async context: each task below gets its own, as each
    # socket's handler did. They all draw on the one synchronous pool.
    before = held_by(observer, os.getpid())
    await asyncio.gather(*(cache.aget(f"test-{index}") for index in range(50)))
    await asyncio.gather(*(sync_to_async(cache.get)(f"test-{index}") for index in range(50)))
    assert held_by(observer, os.getpid()) - before <= shared_redis.SYNC_CONNECTIONS


@pytest.mark.timeout(180)
@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="reads Linux's /proc")
async def test_joins_and_closes_leave_no_connection_behind(
    daphne_server, redis_url, observer, environment
):
    server = await database_sync_to_async(daphne_server)()
    pid = server.process.pid
    redis_port = urlsplit(redis_url).port or 6379
    counts = presence.backend()
    twice = Wallet()  # one wallet, two connections: one participant
    others = [Wallet() for _ in range(40)]

    async def join(wallet: Wallet) -> tuple[Any, int]:
        headers = {"Authorization": f"Bearer {wallet.token}"}
        socket = await websockets.connect(server.ws, additional_headers=headers)
        frame = {"environmentId": environment.id, "userId": wallet.address}
        await socket.send(json.dumps({"type": "JOIN_ENVIRONMENT", "data": frame}))
        state = json.loads(await asyncio.wait_for(socket.recv(), 30))
        assert state["type"] == "ENVIRONMENT_STATE", state
        return socket, state["data"]["participants"]

    async def all_gone() -> None:
        deadline = time.monotonic() + 30
        while await asyncio.to_thread(counts.count, environment.id):
            assert time.monotonic() < deadline, "the server never saw the closes"
            await asyncio.sleep(0.1)

    for _ in range(2):  # a leak grows with every round; the pools only up to their bounds
        first, participants = await join(twice)
        assert participants == 1
        second, participants = await join(twice)
        assert participants == 1  # the same wallet again
        sockets = [first, second]
        for index, wallet in enumerate(others):
            socket, participants = await join(wallet)
            sockets.append(socket)
            assert participants == index + 2
        rejoined = await asyncio.gather(*(join(wallet) for wallet in others[:10]))
        assert {participants for _, participants in rejoined} == {len(others) + 1}
        sockets += [socket for socket, _ in rejoined]
        await first.close()
        assert await asyncio.to_thread(counts.count, environment.id) == len(others) + 1
        await asyncio.gather(*(socket.close() for socket in sockets))
        await all_gone()
        # Every connection the server holds carries its name, and they stay within the bound.
        assert held_by(observer, pid) == sockets_to(redis_port, pid) <= PROCESS_BOUND


async def test_a_congested_pool_is_not_an_outage(redis_url, caplog):
    breaker = Breaker("Redis")
    pool = shared_redis._AsyncPool.from_url(redis_url, max_connections=1, timeout=0.1)
    held = await pool.get_connection()
    with pytest.raises(shared_redis.Congested) as congested:
        await pool.get_connection()
    breaker.failed(congested.value)
    assert not breaker.down
    assert "queueing in this process" in caplog.text
    await pool.release(held)
    await pool.disconnect()

    threads = shared_redis._Pool.from_url(redis_url, max_connections=1, timeout=0.1)
    held = threads.get_connection()
    with pytest.raises(shared_redis.Congested):
        threads.get_connection()
    threads.release(held)
    threads.disconnect()

    refused = shared_redis._AsyncPool.from_url("redis://127.0.0.1:9/0", timeout=0.1)
    with pytest.raises(redis.ConnectionError) as down:  # nothing listens: that is an outage
        await refused.get_connection()
    breaker.failed(down.value)
    assert breaker.down
