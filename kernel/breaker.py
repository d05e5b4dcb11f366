"""One process's view of whether Redis answers.

Every Redis user in a process (the hub's channel layer, the rate limiter, presence) reports its
failures and successes to one :class:`Breaker`. While Redis is known to be down they skip it and
fall back to what this process knows, trying it again at most once per cool-down, so no request
waits on a dead server. The outage is logged once when it starts (a warning) and once when it
ends (an info line), whoever notices first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from redis import exceptions as redis_errors

from kernel.redis import Congested

logger = logging.getLogger(__name__)

COOLDOWN = 1.0  # seconds between attempts while Redis is down
CONGESTION_LOG_EVERY = 60.0  # seconds between warnings that calls wait on each other
# What says "Redis is not answering"; any other error is a bug in the call, not an outage.
UNAVAILABLE = (OSError, TimeoutError, redis_errors.ConnectionError, redis_errors.TimeoutError)


class Breaker:
    """A circuit breaker shared by the users of one dependency, safe from any thread."""

    def __init__(self, name: str, cooldown: float = COOLDOWN) -> None:
        self.name = name
        self.cooldown = cooldown
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_try = 0.0
        self._recovery: list[Callable[[], None]] = []
        self._congestion_quiet_until = 0.0
        self.outages = 0  # outages seen by this process (observability and tests)

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def should_try(self) -> bool:
        """True while the dependency is up, and once per cool-down while it is down."""
        with self._lock:
            if self._down_since is None:
                return True
            now = time.monotonic()
            if now < self._next_try:
                return False
            self._next_try = now + self.cooldown
            return True

    def failed(self, exc: BaseException) -> None:
        """A call failed: open the breaker; the first failure of an outage is logged.

        Only a failure to reach the dependency opens it. A call that found every pooled
        connection busy (:class:`kernel.redis.Congested`) leaves it closed, with a warning at most
        once a minute; any other error (a bad argument, a script error) is logged with its
        traceback and leaves the breaker as it is.
        """
        if isinstance(exc, Congested):
            self._congested(exc)
            return
        if not isinstance(exc, UNAVAILABLE):
            logger.error("%s call failed", self.name, exc_info=exc)
            return
        with self._lock:
            now = time.monotonic()
            self._next_try = now + self.cooldown
            if self._down_since is not None:
                return
            self._down_since = now
            self.outages += 1
        logger.warning(
            "%s unavailable (%s); running on this process alone until it answers again",
            self.name,
            _describe(exc),
        )

    def _congested(self, exc: Congested) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._congestion_quiet_until:
                return
            self._congestion_quiet_until = now + CONGESTION_LOG_EVERY
        logger.warning(
            "%s calls are queueing in this process (%s); the ones that waited too long fell back "
            "to what this process knows",
            self.name,
            exc,
        )

    def succeeded(self) -> None:
        """A call worked: close the breaker; the end of an outage is logged once."""
        if self._down_since is None:  # the common case, without taking the lock
            return
        with self._lock:
            if self._down_since is None:
                return
            lasted = time.monotonic() - self._down_since
            self._down_since = None
            callbacks = list(self._recovery)
        logger.info("%s available again after %.1f s", self.name, lasted)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("%s recovery callback failed", self.name)

    def on_recovery(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from whichever thread notices) each time an outage ends."""
        with self._lock:
            self._recovery.append(callback)

    def reset(self) -> None:
        """Forget any outage (tests)."""
        with self._lock:
            self._down_since = None
            self._next_try = 0.0


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


redis_breaker = Breaker("Redis")
