"""Running ORM work from async code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connections, models

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


# Hot paths (a trade, its receipt) write with plain SQL built once from the models' metadata;
# these name what the statements touch, so no table or column name is written by hand.


def model_field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field


def sql_table(model: type[models.Model]) -> str:
    """``model``'s table, quoted for the default database."""
    return connections["default"].ops.quote_name(model._meta.db_table)


def sql_column(model: type[models.Model], name: str) -> str:
    """The column of ``model``'s field ``name``, quoted for the default database."""
    return connections["default"].ops.quote_name(model_field(model, name).column)
