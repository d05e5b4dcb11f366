"""The server process's lifecycle: readiness, and the drain that ends it.

A process is *ready* until its shutdown begins. On SIGTERM or SIGINT the launcher
(``python -m funpump.serve``) runs :func:`drain` before daphne stops:

1. readiness turns false (``/api/health/ready`` answers 503) and new WebSocket handshakes are
   refused with HTTP 503, so a proxy sends new clients to another process;
2. every connection stops taking messages and finishes the one it is handling: a trade that
   commits is answered to its trader;
3. the hub hands every broadcast still queued for the other processes to the channel layer;
4. every connection closes with 1012 (service restart) once its answers are written, and the
   drain waits for the connections to clean up (presence, subscriptions).

All of it within ``FUNPUMP_DRAIN_SECONDS``. A message that arrives after step 1 is not handled,
so on a 1012 close a request that got no answer did not run: the client resends it after
reconnecting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Protocol

from kernel.realtime import Hub

logger = logging.getLogger(__name__)

CLOSE_RESTART = 1012  # RFC 6455 "Service Restart": reconnect, the service is coming back
# The share of the drain time kept for the close handshakes, whatever the handling took.
CLOSE_SHARE = 0.2
CLOSE_RESERVE_MAX = 2.0
HUB_CLOSE_TIMEOUT = 2.0  # seconds for the hub to leave the channel layer after the drain


class Drainable(Protocol):
    """A live connection as the drain sees it."""

    async def settle(self) -> None:
        """Finish the message being handled; the ones after it are refused."""

    async def close_for_restart(self, wait: float) -> None:
        """Close with 1012 once every frame already queued for the client is written (waiting
        at most ``wait`` seconds for that)."""


@dataclass(frozen=True, slots=True)
class DrainReport:
    """What a drain did: connections at its start, those still open at its end, its length."""

    connections: int
    left_open: int
    seconds: float


_draining_since: float | None = None
# Each connection with the event loop it runs on: only the running loop's are drained (a loop
# that closed without its connections' clean-up, as at the end of a test, leaves none behind).
_connections: dict[Drainable, asyncio.AbstractEventLoop] = {}
_gone: asyncio.Event | None = None


def ready() -> bool:
    """Whether this process should get new clients (false from the start of the drain)."""
    return _draining_since is None


def draining() -> bool:
    return _draining_since is not None


def register(connection: Drainable) -> bool:
    """Track a newly accepted connection; False when the drain has begun (close it at once)."""
    if draining():
        return False
    _connections[connection] = asyncio.get_running_loop()
    return True


def unregister(connection: Drainable) -> None:
    """The connection is gone and cleaned up."""
    _connections.pop(connection, None)
    if _gone is not None and not _live():  # the drain waits for the last one
        _gone.set()


def _live() -> list[Drainable]:
    """This loop's connections, forgetting those of loops that have closed."""
    for connection, loop in list(_connections.items()):
        if loop.is_closed():
            del _connections[connection]
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return list(_connections)
    return [connection for connection, loop in _connections.items() if loop is running]


def connections() -> int:
    return len(_live())


def begin_drain() -> None:
    """Readiness turns false and new connections are refused from now on."""
    global _draining_since
    if _draining_since is None:
        _draining_since = time.monotonic()


async def drain(timeout: float) -> DrainReport:
    """Finish the work in flight and close every connection with 1012, within ``timeout``."""
    global _gone
    started = time.monotonic()
    begin_drain()
    _gone = asyncio.Event()
    deadline = started + timeout
    live = _live()
    logger.info(
        "draining %d connections (at most %s s)",
        len(live),
        timeout,
        extra={"event": "drain", "connections": len(live)},
    )
    close_reserve = min(CLOSE_RESERVE_MAX, timeout * CLOSE_SHARE)
    await _within(deadline - close_reserve, (connection.settle() for connection in live))
    hub = Hub.instance
    if hub is not None:
        await hub.flush(max(0.0, deadline - close_reserve - time.monotonic()))
    # Half of what is left to write the answers, the rest for the clients' close replies.
    wait = max(0.0, deadline - time.monotonic()) / 2
    await _within(deadline, (connection.close_for_restart(wait) for connection in _live()))
    if _live():
        await _within(deadline, [_gone.wait()])
    left_open = len(_live())
    if hub is not None:
        try:
            await asyncio.wait_for(hub.close(), HUB_CLOSE_TIMEOUT)
        except TimeoutError:
            logger.warning("the hub did not stop within %s s", HUB_CLOSE_TIMEOUT)
    report = DrainReport(len(live), left_open, round(time.monotonic() - started, 3))
    log = logger.warning if left_open else logger.info
    log(
        "drained %d connections in %.3f s (%d still open)",
        report.connections,
        report.seconds,
        left_open,
        extra={
            "event": "drained",
            "connections": report.connections,
            "leftOpen": left_open,
            "seconds": report.seconds,
        },
    )
    return report


async def _within(deadline: float, calls: Iterable[Awaitable[object]]) -> None:
    """Run ``calls`` concurrently until they finish or ``deadline`` (monotonic) passes."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
    for task in pending:
        task.cancel()
    for task in _done:
        if not task.cancelled() and task.exception() is not None:
            logger.warning("drain step failed: %r", task.exception())


def reset() -> None:
    """Back to ready with no connections (tests)."""
    global _draining_since, _gone
    _draining_since = None
    _gone = None
    _connections.clear()
