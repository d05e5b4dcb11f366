"""Running ORM work from async code."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, cast

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.sql import Query

from kernel import pgpool  # noqa: F401  (gives the database pool its cheap check)

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


M = TypeVar("M", bound=models.Model)


class ModelRows(Generic[M]):
    """``model``'s instances from rows of a hand-written statement: :attr:`columns` selects
    every concrete column (table alias ``alias``), :meth:`instance` makes the instance of one
    row's slice, the values converted as the ORM converts them (SQLite's datetimes, say)."""

    def __init__(self, model: type[M], alias: str) -> None:
        self.model = model
        self.fields = list(model._meta.concrete_fields)
        self.columns = ", ".join(
            f"{alias}.{sql_column(model, field.name)}" for field in self.fields
        )
        self.names = [field.attname for field in self.fields]
        self._converters: weakref.WeakKeyDictionary[BaseDatabaseWrapper, Any] = (
            weakref.WeakKeyDictionary()
        )

    def __len__(self) -> int:
        return len(self.fields)

    def _converters_of(self, wrapper: BaseDatabaseWrapper) -> Any:
        converters = self._converters.get(wrapper)
        if converters is None:
            compiler_class = wrapper.ops.compiler("SQLCompiler")
            compiler = compiler_class(Query(self.model), wrapper, wrapper.alias)
            table = self.model._meta.db_table
            converters = compiler.get_converters([field.get_col(table) for field in self.fields])
            self._converters[wrapper] = converters
        return converters

    def instance(self, values: Sequence[Any]) -> M:
        wrapper = connections[DEFAULT_DB_ALIAS]  # this thread's
        row = list(values)
        for index, (functions, expression) in self._converters_of(wrapper).items():
            value = row[index]
            for function in functions:
                value = function(value, expression, wrapper)
            row[index] = value
        return self.model.from_db(wrapper.alias, self.names, row)
