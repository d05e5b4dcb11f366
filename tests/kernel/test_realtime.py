"""The hub's ordered fan-out: missing events are read back from the database, never skipped,
and a sender gets its own copy of its event in the public one's place.

These drive one :class:`kernel.realtime.Hub` directly (no server, no Redis) with a fake
history, and check what each member's socket would receive. The last tests check that the
history the apps register rebuilds every event exactly as it was broadcast.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from channels.layers import channel_layers

import protocol
from environments.selectors import environment_events, environment_sequences
from environments.services import chat_post, environment_join
from kernel.realtime import Event, History, Hub
from kernel.realtime import hub as realtime_hub
from kernel.realtime import publish as realtime_publish
from trading.services import trade_execute

ENV = "env_gaps"


def event(sequence: int) -> Event:
    return Event(ENV, sequence, "CHAT_MESSAGE", {"message": f"m{sequence}", "sequence": sequence})


def own_copy(sequence: int, request_id: str) -> str:
    """The text of a sender's own copy: its ``requestId`` and a private field."""
    data = {"message": f"m{sequence}", "sequence": sequence, "mine": True}
    return protocol.encode("CHAT_MESSAGE", data, request_id)


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
    monkeypatch.setattr(realtime_hub, "GAP_WAIT", 0.05)

    def install(stored: range | list[int]) -> FakeHistory:
        fake = FakeHistory(stored)
        monkeypatch.setattr(realtime_hub, "_history", History(fake.events, fake.latest))
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


async def joined_second(hub: Hub) -> Socket:
    other = Socket()
    await hub.join(ENV, "c2", other.push)
    hub.ready(ENV, "c2", 0)
    return other


async def test_the_sender_gets_its_own_copy_in_place_of_the_public_one(history):
    history(range(1, 3))
    hub, sender = await hub_with_member()
    other = await joined_second(hub)
    hub.hold(ENV, "c1")  # c1's chat line is being posted
    hub._deliver(event(1))  # meanwhile, another process's event
    hub.submit(event(2))  # c1's line committed: its public copy
    assert sender.frames == [] and other.sequences == [1, 2]
    hub.release(ENV, "c1", 2, own_copy(2, "r7"))  # the service returned
    assert sender.sequences == other.sequences == [1, 2]
    assert sender.frames[1]["requestId"] == "r7" and sender.frames[1]["data"]["mine"]
    assert "requestId" not in other.frames[1] and "mine" not in other.frames[1]["data"]


async def test_an_own_copy_waits_for_its_event_when_released_first(history):
    history(range(1, 3))
    hub, sender = await hub_with_member()
    other = await joined_second(hub)
    hub.hold(ENV, "c1")
    hub.release(ENV, "c1", 2, own_copy(2, "r1"))  # before the public copy reached the hub
    hub._deliver(event(1))
    assert sender.sequences == [1]
    hub.submit(event(2))
    assert sender.sequences == other.sequences == [1, 2]
    assert sender.frames[1]["requestId"] == "r1"
    assert "requestId" not in other.frames[1]


async def test_a_refused_request_releases_what_was_held(history):
    history(range(1, 3))
    hub, sender = await hub_with_member()
    hub.hold(ENV, "c1")
    hub._deliver(event(1))
    hub._deliver(event(2))
    assert sender.frames == []
    hub.release(ENV, "c1")  # refused, or a replay: no event of its own
    assert sender.sequences == [1, 2]
    assert all("requestId" not in frame for frame in sender.frames)


async def test_an_own_event_read_back_from_the_database_still_gives_the_own_copy(history):
    fake = history(range(1, 4))
    hub, sender = await hub_with_member(layer_up=False)
    other = await joined_second(hub)
    hub._deliver(event(1))
    hub.hold(ENV, "c1")
    hub._deliver(event(3))  # another process's next event, after c1's (2), polled
    await settle(lambda: len(other.frames) == 3)  # 2 was read back before its commit callback
    assert fake.calls == [(1, 3)]
    hub.submit(event(2))  # the commit callback: a duplicate by now
    hub.release(ENV, "c1", 2, own_copy(2, "r7"))
    assert sender.sequences == other.sequences == [1, 2, 3]
    assert sender.frames[1]["requestId"] == "r7"
    assert "requestId" not in other.frames[1]


async def test_a_trader_behind_a_slow_layer_is_answered_from_the_database(history, monkeypatch):
    fake = history(range(1, 4))
    monkeypatch.setattr(realtime_hub, "GAP_WAIT", 30)  # other processes' events: a long wait
    hub, trader = await hub_with_member()  # the layer is up
    hub._deliver(event(1))
    hub.hold(ENV, "c1")
    hub.submit(event(3))  # 2 (another process's) is still on its way over the layer
    hub.release(ENV, "c1", 3, own_copy(3, "r1"))
    await settle(lambda: len(trader.frames) == 3)
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


# --- coalesced feeds and layer messages ----------------------------------------------------------


async def test_a_feed_changes_only_with_the_events_named_for_it():
    hub = Hub(asyncio.get_running_loop())
    socket = Socket()

    async def compute() -> dict[str, Any]:
        return {"price": "1"}

    await hub.subscribe_feed(ENV, "c1", socket.push, compute, changed_by=frozenset({"TRADE"}))
    feed = hub.feeds[ENV]
    hub._deliver(event(1))  # a chat line
    assert not feed.changed and feed.sequence == 1
    hub._deliver(Event(ENV, 2, "TRADE", {"sequence": 2}))
    assert feed.changed
    await hub.unsubscribe_feed(ENV, "c1")
    assert ENV not in hub.feeds


async def test_layer_messages_are_dispatched_by_type_and_our_own_are_ignored(history):
    history(range(1, 3))
    hub, socket = await hub_with_member()
    heard: list[dict[str, Any]] = []
    await hub.listen("_voice.s1", "c1", heard.append)
    fanout = realtime_hub.fanout_message(event(1))
    hub._handle(fanout)  # this process's own broadcast, back from the group
    hub._handle({**fanout, "process": "another"})
    hub._handle({**fanout, "process": "another", "sequence": "not a number"})  # malformed
    hub._handle({"type": "signal", "environment": "_voice.s1", "payload": {"a": 1}})
    hub._handle({"type": "hub.stop"})
    assert socket.sequences == [1]
    assert heard == [{"a": 1}]


async def test_a_process_alone_in_a_group_sends_nothing_and_others_get_every_event(
    redis_url, history, monkeypatch
):
    """The hub hands the layer only what another process can hear: alone in an environment's
    group it sends nothing; once another channel is in the group, every event goes out (after
    at most ``ALONE_FOR``, during which a newcomer reads the room's events from the database)."""
    monkeypatch.setattr(realtime_hub, "ALONE_FOR", 0.3)
    history([])
    environment = f"env_alone_{secrets.token_hex(4)}"
    hub = Hub(asyncio.get_running_loop())
    hub._start()
    await hub._ready.wait()
    assert hub.layer is not None
    sent: list[dict[str, Any]] = []
    group_send = hub.layer.group_send

    async def recording(group: str, message: dict[str, Any]) -> None:
        sent.append(message)
        await group_send(group, message)

    monkeypatch.setattr(hub.layer, "group_send", recording)
    # Another process: a layer of its own (a receive waits behind any other of its layer).
    elsewhere = channel_layers.make_backend("default")
    other = await elsewhere.new_channel("hub.")
    try:
        socket = Socket()
        await hub.join(environment, "c1", socket.push)
        hub.ready(environment, "c1", 0)
        hub.submit(Event(environment, 1, "CHAT_MESSAGE", {"message": "m1", "sequence": 1}))
        assert await hub.flush(5)
        assert sent == []
        assert socket.sequences == [1]  # delivered here all the same

        await elsewhere.group_add(realtime_hub.layer_group(environment), other)
        hub.submit(Event(environment, 2, "CHAT_MESSAGE", {"message": "m2", "sequence": 2}))
        assert await hub.flush(5)
        assert sent == []  # still "alone" for ALONE_FOR: the newcomer reads it back
        await asyncio.sleep(0.35)
        hub.submit(Event(environment, 3, "CHAT_MESSAGE", {"message": "m3", "sequence": 3}))
        assert await hub.flush(5)
        heard = await asyncio.wait_for(elsewhere.receive(other), 5)
        assert (heard["type"], heard["sequence"]) == ("fanout", 3)
        assert [message["sequence"] for message in sent] == [3]
        assert socket.sequences == [1, 2, 3]
    finally:
        await elsewhere.group_discard(realtime_hub.layer_group(environment), other)
        await hub.close()
        await elsewhere.flush()


async def test_a_process_that_starts_following_a_room_reads_what_was_not_sent_to_it(
    redis_url, history, monkeypatch
):
    """A process still "alone" in a room's group sends it nothing for ALONE_FOR, so one that
    has just joined the group reads the room's new events from the database meanwhile, well
    before the slow periodic check (made very slow here) would."""
    monkeypatch.setattr(realtime_hub, "CHECK_EVERY", 60)
    fake = history([])
    hub = Hub(asyncio.get_running_loop())
    hub._start()
    await hub._ready.wait()
    try:
        await asyncio.sleep(0.1)  # the watcher is now in its slow wait
        socket = Socket()
        await hub.join(ENV, "c1", socket.push)
        hub.ready(ENV, "c1", 0)
        fake.stored = {number: event(number) for number in (1, 2)}  # committed elsewhere
        await settle(lambda: len(socket.frames) == 2, timeout=realtime_hub.ALONE_FOR + 1.5)
        assert socket.sequences == [1, 2]
    finally:
        await hub.close()


async def test_a_feed_a_process_starts_following_is_recomputed_once_it_may_have_missed_a_touch(
    redis_url, history, monkeypatch
):
    """Another process "alone" in a feed's group sends no touch for ALONE_FOR: the newcomer
    recomputes the feed once that is over, so a change in that window still reaches it."""
    monkeypatch.setattr(realtime_hub, "ALONE_FOR", 0.2)
    history([])
    hub = Hub(asyncio.get_running_loop())
    hub._start()
    await hub._ready.wait()
    value = {"unclaimed": "1"}

    async def compute() -> dict[str, Any]:
        return dict(value)

    try:
        socket = Socket()
        key = f"rewards:{secrets.token_hex(4)}"
        await hub.subscribe_feed(key, "c1", socket.push, compute, kind="REWARDS_UPDATE")
        value["unclaimed"] = "2"  # changed by a trade elsewhere, its touch never sent
        await settle(
            lambda: any(frame["data"] == {"unclaimed": "2"} for frame in socket.frames),
            timeout=realtime_hub.ALONE_FOR + 1.5,
        )
    finally:
        await hub.close()


# --- the history the apps register ----------------------------------------------------------


@pytest.mark.django_db
def test_the_history_rebuilds_every_event_exactly_as_it_was_broadcast(
    environment, monkeypatch, django_capture_on_commit_callbacks
):
    broadcast: list[Event] = []
    monkeypatch.setattr(realtime_publish, "_dispatch", broadcast.append)
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
