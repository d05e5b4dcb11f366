"""The hub's gap recovery: missing events are read back from the database, never skipped.

These drive one :class:`kernel.realtime.Hub` directly (no server, no Redis) with a fake
history, and check what each member's socket would receive. The last tests check that the
history the apps register rebuilds every event exactly as it was broadcast.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from environments.selectors import environment_events, environment_sequences
from environments.services import chat_post, environment_join
from kernel import realtime
from kernel.realtime import Event, History, Hub, Origin
from trading.services import trade_execute

ENV = "env_gaps"


def event(sequence: int, origin: Origin | None = None) -> Event:
    return Event(
        ENV,
        sequence,
        "CHAT_MESSAGE",
        {"message": f"m{sequence}", "sequence": sequence},
        private={"mine": True} if origin else None,
        origin=origin,
    )


class FakeHistory:
    """The database as the hub sees it: stored events, and failures on demand."""

    def __init__(self, stored: range | list[int]) -> None:
        self.stored = {number: event(number) for number in stored}
        self.failures = 0
        self.calls: list[tuple[int, int]] = []

    def events(self, environment_id: str, after: int, upto: int) -> list[Event]:
        self.calls.append((after, upto))
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unavailable")
        return [self.stored[n] for n in sorted(self.stored) if after < n <= upto]

    def latest(self, environment_ids: list[str]) -> dict[str, int]:
        return {ENV: max(self.stored, default=0)}


@pytest.fixture
def history(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeHistory]:
    monkeypatch.setattr(realtime, "GAP_WAIT", 0.05)

    def install(stored: range | list[int]) -> FakeHistory:
        fake = FakeHistory(stored)
        monkeypatch.setattr(realtime, "_history", History(fake.events, fake.latest))
        return fake

    return install


class Socket:
    """What one member's connection would send to its client."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def push(self, text: str) -> None:
        self.frames.append(json.loads(text))

    @property
    def sequences(self) -> list[int]:
        return [frame["data"]["sequence"] for frame in self.frames]


async def hub_with_member(*, layer_up: bool = True, after: int = 0) -> tuple[Hub, Socket]:
    """A hub as in a server process sharing a layer (not started: no layer is touched)."""
    hub = Hub(asyncio.get_running_loop())
    hub.shared = True
    hub._layer_up = layer_up
    socket = Socket()
    await hub.join(ENV, "c1", socket.push)
    hub.ready(ENV, "c1", after)
    return hub, socket


async def settle(condition: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_gap_is_filled_from_the_database_in_order(history):
    fake = history(range(1, 5))
    hub, socket = await hub_with_member()
    hub._deliver(event(1))
    hub._deliver(event(4))  # 2 and 3 never come over the layer
    await settle(lambda: len(socket.frames) == 4)
    assert socket.sequences == [1, 2, 3, 4]
    assert socket.frames[1] == json.loads(fake.stored[2].text)  # the stored event, as broadcast
    assert fake.calls == [(1, 4)]


async def test_an_event_that_arrives_within_the_wait_is_not_read_back(history):
    fake = history(range(1, 4))
    hub, socket = await hub_with_member()
    hub._deliver(event(1))
    hub._deliver(event(3))
    hub._deliver(event(2))  # late, but in time
    await asyncio.sleep(0.15)
    assert socket.sequences == [1, 2, 3]
    assert fake.calls == []


async def test_duplicates_are_ignored_after_a_fill(history):
    history(range(1, 4))
    hub, socket = await hub_with_member()
    hub._deliver(event(1))
    hub._deliver(event(3))
    await settle(lambda: len(socket.frames) == 3)
    for number in (2, 3, 1):  # the layer's copies arrive after all
        hub._deliver(event(number))
    await asyncio.sleep(0.1)
    assert socket.sequences == [1, 2, 3]


async def test_a_failing_database_is_retried_and_nothing_is_skipped(history, caplog):
    fake = history(range(1, 4))
    fake.failures = 2
    hub, socket = await hub_with_member()
    hub._deliver(event(1))
    hub._deliver(event(3))
    await asyncio.sleep(0.1)
    assert socket.sequences == [1]  # 3 waits behind 2 while the database is unavailable
    await settle(lambda: len(socket.frames) == 3)
    assert socket.sequences == [1, 2, 3]
    assert len(fake.calls) == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the first failure; the retries are quiet


async def test_only_an_event_the_database_does_not_hold_is_skipped(history, caplog):
    history([1, 3])  # 2 was deleted since
    hub, socket = await hub_with_member()
    hub._deliver(event(1))
    hub._deliver(event(3))
    await settle(lambda: len(socket.frames) == 2)
    assert socket.sequences == [1, 3]
    assert any("not in the database" in r.getMessage() for r in caplog.records)


async def test_while_the_layer_is_down_new_events_are_polled_from_the_database(history):
    fake = history(range(1, 4))
    hub, socket = await hub_with_member(layer_up=False)
    hub._deliver(event(1))
    await hub._catch_up()  # the poll finds sequence 3: 2 and 3 are read back at once
    await settle(lambda: len(socket.frames) == 3)
    assert socket.sequences == [1, 2, 3]
    assert fake.calls == [(1, 3)]


async def test_an_event_committing_in_this_process_gives_its_trader_the_own_copy(history):
    history(range(1, 4))
    hub, trader = await hub_with_member(layer_up=False)
    other = Socket()
    await hub.join(ENV, "c2", other.push)
    hub.ready(ENV, "c2", 0)
    delivered = asyncio.get_running_loop().create_future()
    own = event(2, Origin("c1", "r7", delivered))
    hub._deliver(event(1))
    hub.expect(own)  # the trade's transaction is committing on a worker thread
    hub._deliver(event(3))  # another process's next event, read from the database
    await asyncio.sleep(0.1)
    assert trader.sequences == [1]  # 2 is not read back: its own copy is on the way
    hub.submit(own)
    await settle(lambda: len(trader.frames) == 3 and len(other.frames) == 3)
    assert trader.sequences == other.sequences == [1, 2, 3]
    assert trader.frames[1]["requestId"] == "r7" and trader.frames[1]["data"]["mine"]
    assert "requestId" not in other.frames[1]
    assert delivered.done()


async def test_a_trader_behind_a_slow_layer_is_answered_from_the_database(history, monkeypatch):
    fake = history(range(1, 4))
    monkeypatch.setattr(realtime, "GAP_WAIT", 30)  # other processes' events: a long wait
    hub, trader = await hub_with_member()  # the layer is up
    delivered = asyncio.get_running_loop().create_future()
    own = event(3, Origin("c1", "r1", delivered))
    hub._deliver(event(1))
    hub.expect(own)
    hub.submit(own)  # 2 (another process's) is still on its way over the layer
    await asyncio.wait_for(delivered, 5)
    assert trader.sequences == [1, 2, 3]
    assert trader.frames[2]["requestId"] == "r1"
    assert fake.calls == [(1, 3)]


async def test_a_member_that_joins_behind_gets_what_its_state_lacked(history):
    history(range(1, 6))
    hub = Hub(asyncio.get_running_loop())
    hub.shared = True
    hub._layer_up = False
    socket = Socket()
    await hub.join(ENV, "c1", socket.push)
    hub.ready(ENV, "c1", 2)  # its ENVIRONMENT_STATE included 1 and 2
    await hub._catch_up()
    await settle(lambda: len(socket.frames) == 3)
    assert socket.sequences == [3, 4, 5]


# --- the history the apps register ----------------------------------------------------------


@pytest.mark.django_db
def test_the_history_rebuilds_every_event_exactly_as_it_was_broadcast(
    environment, monkeypatch, django_capture_on_commit_callbacks
):
    broadcast: list[Event] = []
    monkeypatch.setattr(realtime, "_dispatch", broadcast.append)
    wallet = "WalletAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    environment_join(environment_id=environment.id, wallet=wallet)
    with django_capture_on_commit_callbacks(execute=True):
        trade_execute(environment_id=environment.id, wallet=wallet, amount=10**9, is_buy=True)
        chat_post(environment_id=environment.id, wallet=wallet, message="gm \u00e9\U0001f680")
        trade_execute(environment_id=environment.id, wallet=wallet, amount=10**6, is_buy=False)
    assert [e.sequence for e in broadcast] == [1, 2, 3]

    stored = environment_events(environment.id, 0, 3)
    assert [e.text for e in stored] == [e.text for e in broadcast]  # byte for byte
    assert [e.sequence for e in environment_events(environment.id, 1, 2)] == [2]
    assert environment_sequences([environment.id, "env_missing"]) == {environment.id: 3}
