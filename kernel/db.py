"""Running ORM work from async code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from channels.db import database_sync_to_async
from django.conf import settings

T = TypeVar("T")


def db_call(function: Callable[..., T]) -> Callable[..., Any]:
    """Wrap ``function`` (one unit of ORM work) to be awaited from a consumer.

    On PostgreSQL each call runs on a pooled worker thread with a pooled connection, so one slow
    row lock never queues every other socket of the process behind it. SQLite allows one writer
    at a time anyway, so there all calls share Django's single sync thread.
    """
    # Read from settings, not ``connections["default"].vendor``: ``connections`` is per async
    # context, so asking it inside a socket's context makes (and leaks) a wrapper per socket.
    pooled = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    return cast(Callable[..., Any], database_sync_to_async(function, thread_sensitive=not pooled))
