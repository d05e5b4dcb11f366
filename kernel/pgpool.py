"""The PostgreSQL pool's check of a connection it hands out.

With ``CONN_HEALTH_CHECKS`` Django gives its pool psycopg_pool's check, which sends an empty
query: a round trip to the server before every unit of work, trades included. A connection that
sat idle in the pool has nothing to read unless the server closed it (a restart, a failover, an
idle timeout) or sent a notice, so one ``select`` without a wait tells: only a connection with
something to read gets the round trip, which raises for a dead one, and the pool replaces it.
"""

from __future__ import annotations

import select
from typing import Any

from django.db.backends.signals import connection_created
from psycopg_pool import ConnectionPool


def check_connection(connection: Any) -> None:
    """Return if ``connection`` looks alive; raise (the pool replaces it) if it is not."""
    if connection.closed or connection.broken:
        raise ConnectionError("the connection is closed")
    readable, _, _ = select.select([connection.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(connection)


def _use_cheap_check(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Give Django's pool :func:`check_connection` once it exists (Django makes the pool on the
    first connection and passes psycopg_pool's check to it, with no setting to name another)."""
    pool = getattr(connection, "pool", None)
    if pool is not None and getattr(pool, "_check", None) is ConnectionPool.check_connection:
        pool._check = check_connection


connection_created.connect(_use_cheap_check, dispatch_uid="funpump.kernel.pgpool")
