"""Presence in Redis: distinct wallets, kept fresh while connected, expiring when a process dies."""

import time
import uuid

import pytest

from environments import presence


@pytest.fixture
def redis_presence(redis_url, monkeypatch):
    monkeypatch.setattr(presence, "ENTRY_TTL", 1)
    monkeypatch.setattr(presence, "REFRESH_EVERY", 0.2)
    return presence.RedisPresence(redis_url, f"test-{uuid.uuid4().hex}")


def test_counts_distinct_wallets_and_forgets_removed_connections(redis_presence):
    redis_presence.add("env_a", "c1", "alice")
    redis_presence.add("env_a", "c2", "alice")
    redis_presence.add("env_a", "c3", "bob")
    redis_presence.add("env_b", "c4", "bob")
    assert redis_presence.counts(["env_a", "env_b", "env_c"]) == {
        "env_a": 2,
        "env_b": 1,
        "env_c": 0,
    }
    redis_presence.remove("env_a", "c3", "bob")
    assert redis_presence.count("env_a") == 1


def test_live_entries_are_refreshed_and_dead_ones_expire(redis_presence, redis_url):
    redis_presence.add("env_a", "c1", "alice")
    # Another process adds an entry and then dies without removing it.
    other = presence.RedisPresence(redis_url, redis_presence._prefix)
    other.add("env_a", "c9", "carol")
    other._own.clear()  # a dead process refreshes nothing
    time.sleep(2)  # twice the entry lifetime
    assert redis_presence.count("env_a") == 1  # alice kept fresh, carol expired


def test_a_wallet_counts_while_any_of_its_connections_is_present(redis_presence, redis_url):
    other = presence.RedisPresence(redis_url, redis_presence._prefix)  # another process
    assert redis_presence.add("env_a", "c1", "alice") == 1
    assert other.add("env_a", "c2", "alice") == 1  # the same wallet elsewhere
    assert other.add("env_a", "c3", "bob") == 2
    redis_presence.remove("env_a", "c1", "alice")
    assert other.count("env_a") == 2  # alice is still connected through the other process
    other.remove("env_a", "c2", "alice")
    assert redis_presence.count("env_a") == 1
    assert redis_presence.members("env_a") == {"bob"}


def test_a_wallet_whose_last_connection_died_with_its_process_stops_counting(
    redis_presence, redis_url
):
    crashed = presence.RedisPresence(redis_url, redis_presence._prefix)
    crashed.add("env_a", "c9", "carol")
    crashed._own.clear()  # a dead process refreshes nothing
    redis_presence.add("env_a", "c1", "carol")
    redis_presence.remove("env_a", "c1", "carol")  # her entry on the dead process remains
    assert redis_presence.members("env_a") == {"carol"}
    time.sleep(1.5)  # past the entry lifetime
    assert redis_presence.count("env_a") == 0
    assert redis_presence.members("env_a") == set()


def test_local_presence_counts_distinct_wallets():
    local = presence.LocalPresence()
    local.add("env_a", "c1", "alice")
    local.add("env_a", "c2", "alice")
    assert local.count("env_a") == 1
    local.remove("env_a", "c1", "alice")
    local.remove("env_a", "c2", "alice")
    assert local.counts(["env_a"]) == {"env_a": 0}


def test_while_redis_is_down_joins_count_this_process_and_are_written_back_after(
    redis_url, monkeypatch, caplog
):
    from kernel.breaker import Breaker
    from tests.e2e.conftest import free_port

    prefix = f"test-{uuid.uuid4().hex}"
    observer = presence.RedisPresence(redis_url, prefix, Breaker("Redis"))
    # A process whose Redis is unreachable: nothing listens on its port.
    breaker = Breaker("Redis", cooldown=60)
    cut_off = presence.RedisPresence(f"redis://127.0.0.1:{free_port()}/0", prefix, breaker)
    started = time.monotonic()
    cut_off.add("env_a", "c1", "alice")
    cut_off.add("env_a", "c2", "bob")
    cut_off.add("env_a", "c3", "bob")
    cut_off.remove("env_a", "c3", "bob")
    assert cut_off.counts(["env_a", "env_b"]) == {"env_a": 2, "env_b": 0}  # its own connections
    assert cut_off.members("env_a") == {"alice", "bob"}
    assert time.monotonic() - started < 2  # nothing waited on the dead server (one try, fast)
    assert breaker.down
    assert len([r for r in caplog.records if r.levelno >= 30]) == 1  # one warning, no more
    assert observer.count("env_a") == 0

    # Redis answers again: the process's entries are written back at once.
    cut_off._redis = observer._redis
    breaker.succeeded()
    deadline = time.monotonic() + 5
    while observer.count("env_a") != 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert observer.members("env_a") == {"alice", "bob"}
