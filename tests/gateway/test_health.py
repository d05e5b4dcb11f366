"""Health and readiness: every dependency with its own timeout, whatever the process is doing."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import websockets
from django.db import connection as django_connection
from django.test import AsyncClient, Client

from gateway import views as funpump_views
from kernel import lifecycle
from tests.conftest import open_socket
from tests.e2e.conftest import daphne_server  # noqa: F401 (a fixture: real daphne processes)


@pytest.fixture(autouse=True)
def _ready_again() -> Iterator[None]:
    yield
    lifecycle.reset()


async def health(path: str = "/api/health") -> tuple[int, dict[str, Any]]:
    started = time.perf_counter()
    response = await AsyncClient().get(path)
    print(f"{path} answered {response.status_code} in {time.perf_counter() - started:.3f} s")
    return response.status_code, json.loads(response.content)


def http_get(url: str) -> tuple[int, dict[str, Any], float]:
    """A load balancer's poll: a new connection, a bounded wait (the hang of issue 13 fails)."""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    return status, json.loads(body), time.perf_counter() - started


@pytest.fixture
async def silent_redis() -> AsyncIterator[str]:
    """A server that accepts Redis connections and never answers: a hung Redis."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    for writer in held:
        writer.close()
    server.close()


# --- in process ---------------------------------------------------------------------------------


async def test_health_reports_each_dependency_without_redis(db: None, settings: Any) -> None:
    settings.REDIS_URL = ""
    status, body = await health()
    assert status == 200
    assert body == {
        "status": "ok",
        "database": "ok",
        "channelLayer": "ok",
        "redis": "not configured",
        "ready": True,
    }


async def test_health_pings_redis_and_leaves_nothing_in_it(
    db: None, redis_url: str, settings: Any
) -> None:
    store = redis.Redis.from_url(redis_url)
    ours = f"{settings.FUNPUMP_REDIS_PREFIX}*"
    before = set(store.keys(ours))
    for _ in range(3):
        status, body = await health()
        assert status == 200, body
        assert body["redis"] == "ok"
        assert body["channelLayer"] == "ok"
    # The old check sent itself a message through the channel layer and could leave it there.
    assert set(store.keys(ours)) - before == set()
    store.close()


async def test_a_hung_redis_is_reported_unavailable_not_waited_for(
    db: None, settings: Any, silent_redis: str
) -> None:
    settings.REDIS_URL = silent_redis
    status, body = await health()
    assert status == 503
    assert body["redis"] == "unavailable"
    assert body["database"] == "ok"
    assert body["status"] == "unavailable"


async def test_redis_down_is_503_naming_redis(db: None, settings: Any) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # the discard port: connection refused
    status, body = await health()
    assert status == 503
    assert body["redis"] == "unavailable"
    assert body["database"] == "ok"


async def test_database_down_is_503_naming_the_database(
    db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise RuntimeError("database is down")

    monkeypatch.setattr(funpump_views, "_database_ping", broken)
    status, body = await health()
    assert status == 503
    assert body["database"] == "unavailable"
    assert body["status"] == "unavailable"


async def test_a_hung_database_is_reported_unavailable_not_waited_for(
    db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    monkeypatch.setattr(funpump_views, "_database_ping", lambda: release.wait(30))
    try:
        first = await health()
        second = await health()  # queued behind the hung check: times out too, no new thread
    finally:
        release.set()
    for status, body in (first, second):
        assert status == 503
        assert body["database"] == "unavailable"


async def test_readiness_turns_503_when_the_drain_begins(db: None) -> None:
    assert await health("/api/health/ready") == (200, {"status": "ok", "ready": True})
    lifecycle.begin_drain()
    assert await health("/api/health/ready") == (503, {"status": "draining", "ready": False})
    status, body = await health()
    assert status == 200  # the contract: 200 while the dependencies answer
    assert body["ready"] is False
    assert body["database"] == "ok"


async def test_a_drain_answers_what_it_handled_then_closes_with_1012(
    transactional_db: None,
) -> None:
    socket = await open_socket()
    await socket.send_json_to({"type": "HEARTBEAT", "requestId": "before"})
    assert (await socket.receive_json_from())["requestId"] == "before"
    drain = asyncio.create_task(lifecycle.drain(10))
    assert await socket.receive_output(10) == {"type": "websocket.close", "code": 1012}
    assert await health("/api/health/ready") == (503, {"status": "draining", "ready": False})
    await socket.send_json_to({"type": "HEARTBEAT", "requestId": "after"})  # not handled
    await socket.disconnect()
    report = await drain
    assert (report.connections, report.left_open) == (1, 0)
    assert await socket.receive_nothing()


async def test_the_openapi_schema_describes_health_and_readiness(db: None) -> None:
    response = await AsyncClient().get("/api/schema?format=json")
    paths = json.loads(response.content)["paths"]
    assert "503" in paths["/api/health"]["get"]["responses"]
    assert "/api/health/ready" in paths


# --- through the synchronous test client --------------------------------------------------------


def test_health_ok(db: None) -> None:
    response = Client().get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body.get("database") == "ok"
    assert body.get("channelLayer") == "ok"


class BrokenConnection:
    """Stands in for django.db.connection: every cursor fails."""

    vendor = django_connection.vendor

    def cursor(self) -> Any:
        raise RuntimeError("database is down")


def test_health_is_503_when_the_database_fails(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(funpump_views, "connection", BrokenConnection())
    response = Client().get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] != "ok"
    assert body["database"] != "ok"
    assert body["channelLayer"] == "ok"


def test_health_is_503_when_the_channel_layer_fails(
    db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(funpump_views, "get_channel_layer", lambda: None)
    response = Client().get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] != "ok"
    assert body["database"] == "ok"
    assert body["channelLayer"] != "ok"


# --- a real server (the report of issue 13) ----------------------------------------------------


@pytest.mark.timeout(120)
async def test_health_answers_after_and_during_sockets_with_redis(
    redis_url: str,
    daphne_server: Any,  # noqa: F811
) -> None:
    server = await asyncio.to_thread(daphne_server)
    async with websockets.connect(server.ws) as socket:  # open and close one socket
        await socket.send(json.dumps({"type": "HEARTBEAT"}))
        assert json.loads(await socket.recv())["type"] == "HEARTBEAT"
    for _ in range(3):
        status, body, elapsed = await asyncio.to_thread(http_get, f"{server.http}/api/health")
        print(f"health after one socket: {status} in {elapsed:.3f} s")
        assert status == 200, body
        assert body["redis"] == "ok"
        assert body["channelLayer"] == "ok"
    sockets = [await websockets.connect(server.ws) for _ in range(5)]
    for socket in sockets:
        await socket.send(json.dumps({"type": "HEARTBEAT"}))
    status, body, elapsed = await asyncio.to_thread(http_get, f"{server.http}/api/health")
    print(f"health with 5 sockets open: {status} in {elapsed:.3f} s")
    assert status == 200, body
    assert (await asyncio.to_thread(http_get, f"{server.http}/api/health/ready"))[0] == 200
    for socket in sockets:
        await socket.close()
