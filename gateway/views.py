"""HTTP endpoints of the gateway: health, readiness, the protocol schema and the page."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views import View
from rest_framework import status

import protocol
from kernel import lifecycle
from kernel import redis as shared_redis

logger = logging.getLogger(__name__)


# --- health and readiness --------------------------------------------------------------------
# Plain async views: they never wait on Django's sync thread or on the hub's channel, and each
# dependency gets its own short timeout, so a load balancer's poll is answered within a second.

HEALTH_TIMEOUT = 0.5  # seconds each dependency may take to answer
# One thread for the database check: a hung check makes the next ones time out instead of
# piling up threads (a queued check that times out is cancelled before it starts).
_health_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health")


def _database_ping() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()  # back to the pool; the check keeps nothing open


async def _redis_ping() -> None:
    # On the process's pool (kernel/redis.py): a load balancer's poll opens no connection.
    await shared_redis.async_client(settings.REDIS_URL).ping()


async def _check(name: str, probe: Awaitable[Any]) -> str:
    try:
        await asyncio.wait_for(probe, HEALTH_TIMEOUT)
    except Exception as exc:
        logger.warning("health: %s unavailable: %r", name, exc)
        return "unavailable"
    return "ok"


def _no_store(response: JsonResponse) -> JsonResponse:
    response["Cache-Control"] = "no-store"
    # A 503 here is an answer, not a server error: the failing check logged its own warning,
    # and a proxy polling every few seconds must not fill the log with django.request errors.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


class HealthView(View):
    """``GET /api/health``: each dependency, and whether this process takes new clients.

    200 when the database and Redis answer, else 503 (the contract). ``ready`` turns false when
    the process begins to shut down; ``/api/health/ready`` is the check that fails then.
    """

    async def get(self, request: HttpRequest) -> JsonResponse:
        loop = asyncio.get_running_loop()
        database = _check("database", loop.run_in_executor(_health_executor, _database_ping))
        if settings.REDIS_URL:
            database_state, redis_state = await asyncio.gather(
                database, _check("redis", _redis_ping())
            )
        else:
            database_state, redis_state = await database, "not configured"
        if get_channel_layer() is None:
            layer_state = "unavailable"
        else:  # the in-memory layer, or the shared one that lives in Redis
            layer_state = redis_state if settings.REDIS_URL else "ok"
        checks = {"database": database_state, "channelLayer": layer_state, "redis": redis_state}
        healthy = all(value != "unavailable" for value in checks.values())
        return _no_store(
            JsonResponse(
                {
                    "status": "ok" if healthy else "unavailable",
                    **checks,
                    "ready": lifecycle.ready(),
                },
                status=status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        )


class ReadinessView(View):
    """``GET /api/health/ready``: 503 from the moment this process begins to shut down.

    It checks no shared dependency: those fail for every process at once, and a proxy that
    took every process out of rotation would only turn an outage into a total one.
    """

    async def get(self, request: HttpRequest) -> JsonResponse:
        ready = lifecycle.ready()
        return _no_store(
            JsonResponse(
                {"status": "ok" if ready else "draining", "ready": ready},
                status=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        )


_DEPENDENCY = {"type": "string", "enum": ["ok", "unavailable", "not configured"]}
_HEALTH_BODY = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable"]},
        "database": _DEPENDENCY,
        "channelLayer": _DEPENDENCY,
        "redis": _DEPENDENCY,
        "ready": {"type": "boolean"},
    },
    "required": ["status", "database", "channelLayer", "redis", "ready"],
}
_READY_BODY = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ok", "draining"]},
        "ready": {"type": "boolean"},
    },
    "required": ["status", "ready"],
}


def health_schema(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular hook: the health endpoints are plain async views, described here."""

    def operation(name: str, summary: str, body: dict[str, Any], failed: str) -> dict[str, Any]:
        content = {"application/json": {"schema": body}}
        return {
            "get": {
                "operationId": name,
                "summary": summary,
                "tags": ["health"],
                "security": [],
                "responses": {
                    "200": {"description": "ok", "content": content},
                    "503": {"description": failed, "content": content},
                },
            }
        }

    paths = result.setdefault("paths", {})
    paths["/api/health"] = operation(
        "health",
        "The database and Redis, each checked with its own timeout, and readiness",
        _HEALTH_BODY,
        "a dependency did not answer",
    )
    paths["/api/health/ready"] = operation(
        "health_ready",
        "Whether this process takes new clients",
        _READY_BODY,
        "the process is shutting down",
    )
    return result


def protocol_schema(request: HttpRequest) -> JsonResponse:
    """The JSON Schema of every WebSocket message, generated from ``protocol``."""
    return JsonResponse(protocol.json_schema())


def asyncapi(request: HttpRequest) -> JsonResponse:
    """The AsyncAPI 3.0 document of ``/ws``, generated from ``protocol``."""
    return JsonResponse(protocol.asyncapi())


def room(request: HttpRequest) -> HttpResponse:
    """The trading-room page, with the protocol's names and limits for its script to read."""
    return render(request, "room.html", {"protocol": protocol.page_constants()})
