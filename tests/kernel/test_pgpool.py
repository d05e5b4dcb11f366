"""The pool's connection check: a connection the server closed is replaced before it is used,
and a live one is handed out without a round trip first."""

from __future__ import annotations

import time

import psycopg
import pytest
from django.db import connection
from psycopg_pool import ConnectionPool

from kernel.pgpool import check_connection


def _dsn() -> str:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


@pytest.fixture
def pool(postgres, db) -> ConnectionPool:
    with ConnectionPool(_dsn(), min_size=1, max_size=1, check=check_connection) as opened:
        opened.wait(5)
        yield opened


def backend_pid(pool: ConnectionPool) -> int:
    with pool.connection() as conn:
        return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_a_connection_the_server_closed_is_replaced_before_it_is_used(pool) -> None:
    first = backend_pid(pool)
    with psycopg.connect(_dsn(), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [first]).fetchone()[0]
    time.sleep(0.2)  # the server's close reaches the pooled socket
    second = backend_pid(pool)  # no error: the check found the dead one and the pool replaced it
    assert second != first


def test_a_live_connection_is_handed_out_as_it_is(pool) -> None:
    first = backend_pid(pool)
    assert backend_pid(pool) == first
    with pool.connection() as conn:
        check_connection(conn)  # nothing to read: no exception, no query
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_closed_connection_fails_the_check(pool) -> None:
    conn = psycopg.connect(_dsn())
    conn.close()
    with pytest.raises(ConnectionError):
        check_connection(conn)


def test_the_servers_pool_uses_the_check(postgres, db) -> None:
    from django.db import connection as django_connection

    with django_connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert django_connection.pool._check is check_connection
