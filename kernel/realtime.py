"""Broadcasts: published after commit, serialised once, sent once per server process.

Each server process runs one :class:`Hub`. The hub owns one channel-layer channel and joins the
layer group of every environment that has a member in this process, so an event crosses the
layer once per process, not once per member. Inside the process it fans the already-serialised
frame out to the members' outboxes.

Events carry the environment's ``sequence``. The hub delivers them in sequence order per
environment and never gives a member an event its ``ENVIRONMENT_STATE`` already included. The
trader's own copy of its event carries its ``requestId`` and private fields (its balance) and
goes to that connection only.

The layer is a fast path, not the record: trades and chat are stored with their sequence, so a
hub that misses an event (Redis was down, the publishing process died) reads it back from the
database through the :class:`History` the apps register, and delivers it in its place, built
exactly as it was broadcast. Clients get every event once and in order, like Centrifugo's
history recovery. While the layer is down the hub polls the database for the latest sequence of
its environments, so events of the other processes still arrive, a fraction of a second late.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import connections, transaction

from kernel.breaker import redis_breaker
from kernel.db import db_call

logger = logging.getLogger(__name__)
T = TypeVar("T")

PROCESS_ID = f"{os.getpid()}-{secrets.token_hex(4)}"
GAP_WAIT = 0.25  # seconds a missing event may take over the layer before it is read back
TRADER_GAP_WAIT = 0.02  # the same when a trader of this process waits behind the missing event
POLL_EVERY = 0.25  # while the layer is down: how often the database is asked for new events
CHECK_EVERY = 2.0  # while it is up: the same, for events a lost process never broadcast
RECOVERY_WINDOW = 2.0  # after the layer returns, poll fast while every process rejoins it
EXPECT_WAIT = 2.0  # how long an event committing in this process is awaited from its callback
FILL_LIMIT = 500  # events read back per query
LAYER_TIMEOUT = 2.0  # seconds one layer call (send, group change) may take
GROUP_REFRESH = 3600  # seconds between re-adds of layer groups (the layer expires them)
PRICE_WINDOW = 0.1  # PRICE_UPDATE coalescing: at most one per subscription per window


def environment_group(environment_id: str) -> str:
    return f"env.{environment_id}"


def market_key(mint: str) -> str:
    """The feed key of a real mint's market price (environment ids never start with '_')."""
    return f"_market.{mint}"


def rewards_key(wallet: str) -> str:
    """The feed key of a wallet's rewards (environment ids never start with '_')."""
    return f"_rewards.{wallet}"


def voice_key(session_id: str) -> str:
    """The feed key of a voice session: its recognition results and control signals."""
    return f"_voice.{session_id}"


def signal_on_commit(key: str, payload: dict[str, Any]) -> None:
    """After commit, hand ``payload`` to whoever listens on ``key``, in any process."""
    transaction.on_commit(
        lambda: _announce(
            key,
            _signal_message(key, payload),
            lambda hub: hub.signal_everywhere(key, payload),
        )
    )


async def signal(key: str, payload: dict[str, Any]) -> None:
    """Hand ``payload`` to whoever listens on ``key``, in this process or another one."""
    hub = Hub.instance
    if hub is not None and hub.loop is asyncio.get_running_loop():
        hub.signal_everywhere(key, payload)
        return
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(environment_group(key), _signal_message(key, payload))


def _signal_message(key: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": "signal", "environment": key, "payload": payload, "process": PROCESS_ID}


def touch_on_commit(key: str) -> None:
    """After commit, tell every process that ``key``'s watchers should get a fresh update."""
    transaction.on_commit(lambda: _touch(key))


def _touch(key: str) -> None:
    message = {"type": "touch", "environment": key, "process": PROCESS_ID}
    _announce(key, message, lambda hub: hub.touch_everywhere(key))


def _announce(key: str, message: dict[str, Any], here: Callable[[Hub], None]) -> None:
    """From a thread (a commit callback): let this process's hub handle it (``here``), or,
    with no socket server in this process (a management command, a WSGI worker), send
    ``message`` to the other processes through the shared layer."""
    hub = Hub.instance
    if hub is not None and hub.loop is not None and not hub.loop.is_closed():
        hub.loop.call_soon_threadsafe(here, hub)
        return
    layer = get_channel_layer()
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return
    try:
        async_to_sync(layer.group_send)(environment_group(key), message)
    except Exception as exc:
        logger.warning("could not announce %s to the other processes: %r", key, exc)


async def publish_market(mint: str, data: dict[str, Any]) -> None:
    """Send a market ``PRICE_UPDATE`` to every server process with subscribers of ``mint``."""
    layer = get_channel_layer()
    if layer is None:
        return
    key = market_key(mint)
    await layer.group_send(
        environment_group(key), {"type": "market", "environment": key, "data": data}
    )


@dataclass(frozen=True, slots=True)
class Origin:
    """The connection and request that caused an event: it gets the private copy."""

    connection: str
    request_id: str | None = None
    delivered: asyncio.Future[None] | None = None


@dataclass(slots=True)
class Event:
    """One broadcast of an environment: a message type and its public data."""

    environment_id: str
    sequence: int
    type: str
    data: dict[str, Any]
    private: dict[str, Any] | None = None
    origin: Origin | None = None
    text: str = ""

    def __post_init__(self) -> None:
        if not self.text:
            self.text = _frame(self.type, self.data)

    def own_text(self) -> str:
        assert self.origin is not None
        return _frame(self.type, {**self.data, **(self.private or {})}, self.origin.request_id)


def _frame(message_type: str, data: dict[str, Any], request_id: str | None = None) -> str:
    frame: dict[str, Any] = {"type": message_type, "data": data}
    if request_id is not None:
        frame["requestId"] = request_id
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def publish_on_commit(event: Event) -> None:
    """Announce ``event`` once the current transaction commits; a rollback announces nothing."""
    hub = Hub.instance
    if hub is not None:
        hub.expect(event)
    transaction.on_commit(lambda: _dispatch(event))


def _dispatch(event: Event) -> None:
    _announce(event.environment_id, _layer_message(event), lambda hub: hub.submit(event))


def _layer_message(event: Event) -> dict[str, Any]:
    return {
        "type": "fanout",
        "process": PROCESS_ID,
        "environment": event.environment_id,
        "sequence": event.sequence,
        "kind": event.type,
        "text": event.text,
    }


@dataclass(frozen=True, slots=True)
class History:
    """Where hubs read back the events they missed; registered by the apps (the kernel imports
    none of them) with :func:`register_history`. Both run as ORM work on a worker thread.

    ``events(environment_id, after, upto)``: the stored events with ``after < sequence <= upto``
    in sequence order, each built exactly as it was broadcast (public copy). ``latest(ids)``:
    each environment's current ``sequence``.
    """

    events: Callable[[str, int, int], list[Event]]
    latest: Callable[[list[str]], dict[str, int]]


_history: History | None = None


def register_history(history: History) -> None:
    global _history
    _history = history


@dataclass(slots=True)
class Member:
    """One connection's place in an environment's feed."""

    push: Callable[[str], None]
    last: int | None = None  # highest sequence this member has seen; None until its state is sent
    held: list[Event] = field(default_factory=list)

    def offer(self, event: Event, connection: str) -> None:
        if self.last is None:
            self.held.append(event)
            return
        if event.sequence <= self.last:
            return
        self.last = event.sequence
        if event.origin is not None and event.origin.connection == connection:
            self.push(event.own_text())
            if event.origin.delivered is not None and not event.origin.delivered.done():
                event.origin.delivered.set_result(None)
        else:
            self.push(event.text)


@dataclass(slots=True)
class Feed:
    """The members of one environment in this process and the in-order delivery of its events."""

    members: dict[str, Member] = field(default_factory=dict)
    # Price subscribers: connection → push. They get coalesced PRICE_UPDATEs, not events.
    watchers: dict[str, Callable[[str], None]] = field(default_factory=dict)
    # Signal listeners: connection → callback, each signal handed over as it comes.
    listeners: dict[str, Callable[[dict[str, Any]], None]] = field(default_factory=dict)
    price: Callable[[], Awaitable[dict[str, Any]]] | None = None
    price_changed: bool = False
    price_sent_at: float = float("-inf")  # the window (loop time) of the last PRICE_UPDATE
    latest: dict[str, Any] | None = None  # a market feed's last update
    kind: str = "PRICE_UPDATE"  # the message type the watchers receive
    next_sequence: int | None = None
    pending: dict[int, Event] = field(default_factory=dict)
    horizon: int = 0  # the highest sequence known to exist: seen in an event or in the database
    gap_timer: asyncio.TimerHandle | None = None
    filling: bool = False  # the hub is reading missing events back from the database

    @property
    def empty(self) -> bool:
        return not self.members and not self.watchers and not self.listeners

    @property
    def gap(self) -> bool:
        """Events are missing: later ones wait behind them, or the database holds later ones."""
        return self.next_sequence is not None and (
            bool(self.pending) or self.horizon >= self.next_sequence
        )

    def offer(self, event: Event) -> None:
        if event.type == "VIRTUAL_TRADE_EXECUTED":
            self.price_changed = True
        self.horizon = max(self.horizon, event.sequence)
        if self.next_sequence is None:
            self.next_sequence = event.sequence
        if event.sequence < self.next_sequence:
            self._late(event)
            return
        held = self.pending.get(event.sequence)
        if held is None or (held.origin is None and event.origin is not None):
            self.pending[event.sequence] = event  # the trader's copy wins over a public one
        self._drain()

    def fill(self, events: list[Event], upto: int, expected: Callable[[int], bool]) -> list[int]:
        """Deliver events read back from the database, up to sequence ``upto``.

        ``expected(sequence)`` is true for an event committing in this process: its own copy
        (with the trader's ``requestId``) is about to arrive, so it is not taken from the
        database. Returns the sequence numbers below ``upto`` that the database does not hold
        and no one is committing (rows deleted since): they are passed over.
        """
        assert self.next_sequence is not None
        for event in events:
            number = event.sequence
            if number >= self.next_sequence and number not in self.pending and not expected(number):
                self.pending[number] = event
        self._drain()
        missing: list[int] = []
        while self.next_sequence <= upto and not expected(self.next_sequence):
            missing.append(self.next_sequence)
            self.next_sequence += 1
            self._drain()
        return missing

    def skip(self) -> None:
        """Move past missing events that nobody here can be given (no members, no history)."""
        self.next_sequence = min(self.pending) if self.pending else self.horizon + 1
        self._drain()

    def _drain(self) -> None:
        assert self.next_sequence is not None
        while self.next_sequence in self.pending:
            event = self.pending.pop(self.next_sequence)
            for connection, member in self.members.items():
                member.offer(event, connection)
            self._resolve(event)
            self.next_sequence += 1

    def _late(self, event: Event) -> None:
        """An event below the delivery point: a duplicate, or a member's copy that lagged."""
        origin = event.origin
        waiting = (
            origin is not None and origin.delivered is not None and not origin.delivered.done()
        )
        for connection, member in self.members.items():
            if (
                waiting
                and origin is not None
                and connection == origin.connection
                and member.last is not None
                and member.last >= event.sequence
            ):
                # Its public copy was read back from the database before this process's own
                # commit callback ran: the trader still gets the answer to its request.
                logger.warning("trader's copy of %s arrived after its public copy", event.sequence)
                member.push(event.own_text())
            else:
                member.offer(event, connection)  # ignored by members that already have it
        self._resolve(event)

    @staticmethod
    def _resolve(event: Event) -> None:
        origin = event.origin
        if origin is not None and origin.delivered is not None and not origin.delivered.done():
            origin.delivered.set_result(None)

    def close(self) -> None:
        if self.gap_timer is not None:
            self.gap_timer.cancel()
            self.gap_timer = None
        for event in self.pending.values():
            self._resolve(event)


_reader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hub-history")


def _ignore_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _read_and_release(call: Callable[..., T], *args: Any) -> T:
    try:
        return call(*args)
    finally:
        connections["default"].close()  # back to the pool: the reader keeps nothing open


class Hub:
    """The per-process fan-out point between the channel layer and the connections."""

    instance: Hub | None = None
    _lock = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.layer = get_channel_layer()
        self.shared = self.layer is not None and not isinstance(self.layer, InMemoryChannelLayer)
        self.feeds: dict[str, Feed] = {}
        self.channel: str | None = None
        # (group, message) pairs for the other processes, sent in order by one task.
        self._outgoing: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self._stopping = False
        self._receiver: asyncio.Task[None] | None = None
        # The layer (Redis) answers; while it does not, nothing is sent and the database is
        # polled instead. _layer_back wakes the receive loop when it answers again.
        self._layer_up = True
        self._layer_back = asyncio.Event()
        self._layer_back.set()
        self._poll_now = asyncio.Event()
        self._fast_until = 0.0
        self._background: set[asyncio.Task[None]] = set()
        # Events committing in this process (registered from the committing thread): a gap at
        # one of them is waited out, not read back, so the trader gets its own copy.
        self._expected: dict[tuple[str, int], float] = {}
        self._expected_lock = threading.Lock()

    @classmethod
    async def get(cls) -> Hub:
        """The running process's hub, started on first use."""
        loop = asyncio.get_running_loop()
        with cls._lock:
            hub = cls.instance
            if hub is None or hub.loop is not loop or loop.is_closed():
                hub = cls.instance = Hub(loop)
                hub._start()
        await hub._ready.wait()
        return hub

    def _start(self) -> None:
        self._tasks = [self.loop.create_task(self._publish_prices())]
        if not self.shared:
            self._ready.set()
            return
        self._receiver = self.loop.create_task(self._receive())
        self._tasks += [
            self._receiver,
            self.loop.create_task(self._publish()),
            self.loop.create_task(self._refresh_groups()),
            self.loop.create_task(self._watch_sequences()),
        ]

    async def close(self) -> None:
        """Stop the hub's tasks (server shutdown, end of a test)."""
        with Hub._lock:
            if Hub.instance is self:
                Hub.instance = None
        self._stopping = True
        receiver = self._receiver
        if (
            receiver is not None
            and self.layer is not None
            and self.channel is not None
            and self._layer_up
        ):
            # Wake the receive loop with a message rather than cancelling it: a cancelled
            # channels-redis receive can sit in its clean-up for as long as Redis's timeouts.
            try:
                await asyncio.wait_for(self.layer.send(self.channel, {"type": "hub.stop"}), 5)
                await asyncio.wait([receiver], timeout=10)
            except Exception as exc:
                logger.warning("hub receive loop did not stop cleanly: %r", exc)
        tasks = [*self._tasks, *self._background]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for feed in self.feeds.values():
            feed.close()
        self.feeds.clear()

    # --- membership ---------------------------------------------------------------------------

    async def _feed(self, environment_id: str) -> Feed:
        """The environment's feed, joining its layer group when it is new in this process."""
        feed = self.feeds.get(environment_id)
        if feed is None:
            feed = self.feeds[environment_id] = Feed()
            await self._group_add(environment_id)
        return feed

    async def _drop_if_empty(self, environment_id: str, feed: Feed) -> None:
        if feed.empty and self.feeds.get(environment_id) is feed:
            feed.close()
            del self.feeds[environment_id]
            if self.shared and self.channel is not None:
                channel = self.channel
                await self._layer_call(
                    lambda: self.layer.group_discard(environment_group(environment_id), channel)
                )

    async def _group_add(self, key: str) -> None:
        if self.shared and self.channel is not None:
            channel = self.channel
            await self._layer_call(lambda: self.layer.group_add(environment_group(key), channel))

    async def join(self, environment_id: str, connection: str, push: Callable[[str], None]) -> None:
        """Register a connection; it gets events once :meth:`ready` names its state's sequence."""
        feed = await self._feed(environment_id)
        feed.members.setdefault(connection, Member(push=push))

    def ready(self, environment_id: str, connection: str, sequence: int) -> None:
        """The member's state (up to ``sequence``) was sent: deliver what came after it."""
        feed = self.feeds.get(environment_id)
        member = feed.members.get(connection) if feed else None
        if feed is None or member is None:
            return
        if feed.next_sequence is None:
            feed.next_sequence = sequence + 1
        member.last = max(sequence, member.last or 0)
        held, member.held = member.held, []
        for event in held:
            member.offer(event, connection)
        self._watch_gap(environment_id, feed)

    async def leave(self, environment_id: str, connection: str) -> None:
        feed = self.feeds.get(environment_id)
        if feed is None:
            return
        feed.members.pop(connection, None)
        await self._drop_if_empty(environment_id, feed)

    def touch_everywhere(self, key: str) -> None:
        self.touch(key)
        if self.shared:
            message = {"type": "touch", "environment": key, "process": PROCESS_ID}
            self._outgoing.put_nowait((environment_group(key), message))

    def touch(self, key: str) -> None:
        """Something ``key``'s watchers see changed: send them an update next window."""
        feed = self.feeds.get(key)
        if feed is not None:
            feed.price_changed = True

    async def watch_price(
        self,
        environment_id: str,
        connection: str,
        push: Callable[[str], None],
        price: Callable[[], Awaitable[dict[str, Any]]],
        kind: str = "PRICE_UPDATE",
    ) -> None:
        """Send ``connection`` a PRICE_UPDATE after trades, at most one per window.

        ``price`` computes the update's data; the hub calls it once per environment per window,
        whatever the number of subscribers, and sends them all the same frame.
        """
        feed = await self._feed(environment_id)
        feed.watchers[connection] = push
        feed.price = price
        feed.kind = kind

    async def watch_market(
        self, mint: str, connection: str, push: Callable[[str], None], snapshot: dict[str, Any]
    ) -> None:
        """Like :meth:`watch_price`, for a real mint's price from the market feed."""
        key = market_key(mint)

        async def latest() -> dict[str, Any]:
            feed = self.feeds.get(key)
            return (feed.latest if feed else None) or snapshot

        await self.watch_price(key, connection, push, latest)

    async def unwatch_price(self, environment_id: str, connection: str) -> None:
        feed = self.feeds.get(environment_id)
        if feed is not None:
            feed.watchers.pop(connection, None)
            await self._drop_if_empty(environment_id, feed)

    async def listen(
        self, key: str, connection: str, callback: Callable[[dict[str, Any]], None]
    ) -> None:
        """Hand ``connection`` every signal sent to ``key`` (see :func:`signal`)."""
        feed = await self._feed(key)
        feed.listeners[connection] = callback

    async def unlisten(self, key: str, connection: str) -> None:
        feed = self.feeds.get(key)
        if feed is not None:
            feed.listeners.pop(connection, None)
            await self._drop_if_empty(key, feed)

    def signal_everywhere(self, key: str, payload: dict[str, Any]) -> None:
        self._signal(key, payload)
        if self.shared:
            self._outgoing.put_nowait((environment_group(key), _signal_message(key, payload)))

    def _signal(self, key: str, payload: dict[str, Any]) -> None:
        feed = self.feeds.get(key)
        for callback in list(feed.listeners.values()) if feed else ():
            try:
                callback(payload)
            except Exception:
                logger.exception("signal listener of %s failed", key)

    async def _publish_prices(self) -> None:
        # A fixed cadence (not sleep-after-work), so a window's work does not stretch the next.
        next_window = self.loop.time()
        while True:
            next_window = max(next_window + PRICE_WINDOW, self.loop.time())
            await asyncio.sleep(next_window - self.loop.time())
            # One update per environment per window: skip one whose last went out this window.
            due = next_window - PRICE_WINDOW + 0.001
            changed = [
                feed
                for feed in self.feeds.values()
                if feed.price_changed and feed.watchers and feed.price_sent_at <= due
            ]
            for feed in changed:
                feed.price_changed = False
            await asyncio.gather(*(self._send_price(feed, next_window) for feed in changed))

    async def _send_price(self, feed: Feed, window: float) -> None:
        if feed.price is None:
            return
        try:
            data = await feed.price()
        except Exception:
            logger.exception("price update failed")
            feed.price_changed = True  # try again next window
            return
        text = _frame(feed.kind, data)
        feed.price_sent_at = window
        for push in list(feed.watchers.values()):
            push(text)

    # --- events -------------------------------------------------------------------------------

    def expect(self, event: Event) -> None:
        """``event`` is committing in this process (called from the committing thread, which
        holds the environment's row lock: every earlier event is committed already)."""
        now = time.monotonic()
        with self._expected_lock:
            if len(self._expected) > 10_000:  # rolled-back transactions leave their entries
                for key in [k for k, t in self._expected.items() if now - t > EXPECT_WAIT]:
                    del self._expected[key]
            self._expected[(event.environment_id, event.sequence)] = now
        if not self.loop.is_closed():
            # Start reading the events before it that this process has not seen (those of the
            # other processes, while the layer is down) during the commit, not after it.
            self.loop.call_soon_threadsafe(self._known, event.environment_id, event.sequence - 1)

    def _known(self, environment_id: str, sequence: int) -> None:
        feed = self.feeds.get(environment_id)
        if feed is not None and sequence > feed.horizon:
            feed.horizon = sequence
            self._watch_gap(environment_id, feed)

    def _expecting(self, environment_id: str, sequence: int) -> bool:
        key = (environment_id, sequence)
        with self._expected_lock:
            since = self._expected.get(key)
            if since is None:
                return False
            if time.monotonic() - since > EXPECT_WAIT:
                del self._expected[key]
                return False
            return True

    def submit(self, event: Event) -> None:
        """An event committed in this process: deliver it here, then tell the other processes."""
        with self._expected_lock:
            self._expected.pop((event.environment_id, event.sequence), None)
        self._deliver(event)
        if self.shared:
            self._outgoing.put_nowait(
                (environment_group(event.environment_id), _layer_message(event))
            )

    def _deliver(self, event: Event) -> None:
        feed = self.feeds.get(event.environment_id)
        if feed is None:
            Feed._resolve(event)
            return
        feed.offer(event)
        self._watch_gap(event.environment_id, feed)

    # --- gaps -----------------------------------------------------------------------------------

    def _watch_gap(self, environment_id: str, feed: Feed) -> None:
        """Schedule reading missing events back, unless they are about to arrive anyway."""
        if not feed.gap:
            if feed.gap_timer is not None:
                feed.gap_timer.cancel()
                feed.gap_timer = None
            return
        if feed.filling:
            return
        assert feed.next_sequence is not None
        # With the layer up, a missing event is most likely still on its way, though a trader
        # of this process waiting behind it should not wait long for a slow layer; with the
        # layer down it can only come from the database, unless this process is committing it.
        if self._expecting(environment_id, feed.next_sequence):
            wait = GAP_WAIT
        elif self.shared and self._layer_up:
            trader_waits = any(event.origin is not None for event in feed.pending.values())
            wait = TRADER_GAP_WAIT if trader_waits else GAP_WAIT
        else:
            wait = 0.0
        due = self.loop.time() + wait
        if feed.gap_timer is not None:
            if feed.gap_timer.when() <= due:
                return
            feed.gap_timer.cancel()  # it waited for an event that has arrived since
        feed.gap_timer = self.loop.call_at(due, self._gap_due, environment_id, feed)

    def _gap_due(self, environment_id: str, feed: Feed) -> None:
        feed.gap_timer = None
        if self.feeds.get(environment_id) is not feed or not feed.gap:
            return
        if _history is None or not feed.members:
            if feed.members:
                logger.warning(
                    "sequence gap at %s in %s and no history to read it from: skipped",
                    feed.next_sequence,
                    environment_id,
                )
            feed.skip()
            self._watch_gap(environment_id, feed)
            return
        feed.filling = True
        self._spawn(self._fill(environment_id, feed, _history))

    async def _fill(self, environment_id: str, feed: Feed, history: History) -> None:
        """Read the missing events from the database and deliver them in order; a database
        error is retried (members wait; nothing is skipped that the database may hold)."""
        failures = 0
        try:
            while (
                not self._stopping
                and self.feeds.get(environment_id) is feed
                and feed.gap
                and feed.members
            ):
                start = feed.next_sequence
                assert start is not None
                upto = min(max([feed.horizon, *feed.pending]), start + FILL_LIMIT - 1)
                try:
                    events = await self._read(history.events, environment_id, start - 1, upto)
                except Exception as exc:
                    failures += 1
                    if failures == 1:
                        logger.warning(
                            "could not read events %s-%s of %s back (%r); retrying",
                            start,
                            upto,
                            environment_id,
                            exc,
                        )
                    await asyncio.sleep(min(GAP_WAIT * 2**failures, 5.0))
                    continue
                failures = 0
                missing = feed.fill(events, upto, lambda n: self._expecting(environment_id, n))
                if missing:
                    logger.warning(
                        "events %s-%s of %s are not in the database: skipped",
                        missing[0],
                        missing[-1],
                        environment_id,
                    )
                if feed.gap and self._expecting(environment_id, feed.next_sequence or 0):
                    break  # this process's own commit callback brings the next one
        finally:
            feed.filling = False
            if self.feeds.get(environment_id) is feed:
                self._watch_gap(environment_id, feed)

    async def _watch_sequences(self) -> None:
        """Ask the database for the latest sequences now and then: every ``POLL_EVERY`` while
        the layer is down or just back, every ``CHECK_EVERY`` otherwise."""
        while not self._stopping:
            fast = not self._layer_up or self.loop.time() < self._fast_until
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_now.wait(), POLL_EVERY if fast else CHECK_EVERY)
            self._poll_now.clear()
            await self._catch_up()

    async def _catch_up(self) -> None:
        history = _history
        environment_ids = [
            key
            for key, feed in self.feeds.items()
            if not key.startswith("_") and (feed.members or feed.watchers)
        ]
        if history is None or not environment_ids:
            return
        try:
            latest = await self._read(history.latest, environment_ids)
        except Exception as exc:
            logger.debug("could not read the latest sequences: %r", exc)
            return
        for environment_id, sequence in latest.items():
            feed = self.feeds.get(environment_id)
            if feed is None or sequence <= feed.horizon:
                continue
            feed.horizon = sequence
            if feed.watchers:
                feed.price_changed = True  # a trade of another process moved the price
            self._watch_gap(environment_id, feed)

    async def _read(self, call: Callable[..., T], *args: Any) -> T:
        """Run a history read. On PostgreSQL it gets a thread of its own, so it never queues
        behind trades that wait for an environment's lock on the shared worker threads."""
        if connections["default"].vendor != "postgresql":
            result: T = await db_call(call)(*args)
            return result
        return await self.loop.run_in_executor(_reader, _read_and_release, call, *args)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- the layer ------------------------------------------------------------------------------

    async def _receive(self) -> None:
        assert self.layer is not None
        while not self._stopping:
            await self._layer_back.wait()
            try:
                if self.channel is None:
                    self.channel = await self.layer.new_channel("hub.")
                    self._ready.set()
                message = await self.layer.receive(self.channel)
            except Exception as exc:
                self._layer_failed(exc)
                continue
            # channels-redis removes each received message from its backup queue in a task of
            # its own that nobody awaits: if Redis goes down meanwhile, its error would be
            # logged with a traceback at garbage collection. The message was delivered; a
            # redelivery is dropped by sequence.
            for cleaner in getattr(self.layer, "receive_cleaners", ()):
                cleaner.add_done_callback(_ignore_failure)
            self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        if message.get("type") == "touch":
            if message.get("process") != PROCESS_ID:
                self.touch(str(message.get("environment")))
            return
        if message.get("type") == "signal":
            if message.get("process") != PROCESS_ID and isinstance(message.get("payload"), dict):
                self._signal(str(message.get("environment")), message["payload"])
            return
        if message.get("type") == "market":
            feed = self.feeds.get(str(message.get("environment")))
            if feed is not None and isinstance(message.get("data"), dict):
                feed.latest = message["data"]
                feed.price_changed = True
            return
        if message.get("type") != "fanout" or message.get("process") == PROCESS_ID:
            return
        try:
            event = Event(
                environment_id=str(message["environment"]),
                sequence=int(message["sequence"]),
                type=str(message.get("kind", "")),
                data={},
                text=str(message["text"]),
            )
        except (KeyError, TypeError, ValueError):
            logger.warning("ignored a malformed layer message")
            return
        self._deliver(event)

    async def _publish(self) -> None:
        assert self.layer is not None
        while True:
            group, message = await self._outgoing.get()
            try:
                # While the layer is down the message is dropped: the other processes read the
                # events from the database (touches and signals are lost; see the docs).
                await self._layer_call(functools.partial(self.layer.group_send, group, message))
            finally:
                self._outgoing.task_done()  # counted by flush()

    async def _refresh_groups(self) -> None:
        while True:
            await asyncio.sleep(GROUP_REFRESH)  # the layer expires group memberships
            await self._rejoin_groups()

    async def _rejoin_groups(self) -> None:
        for key in list(self.feeds):
            await self._group_add(key)

    async def _layer_call(self, call: Callable[[], Awaitable[Any]]) -> None:
        """Make one layer call, unless the layer is down; a failure means it went down."""
        if not self._layer_up:
            return
        try:
            async with asyncio.timeout(LAYER_TIMEOUT):
                await call()
        except Exception as exc:
            self._layer_failed(exc)

    def _layer_failed(self, exc: BaseException) -> None:
        """The layer stopped answering: poll the database until it answers again."""
        redis_breaker.failed(exc)  # logs the outage once, whoever notices it first
        if not self._layer_up or self._stopping:
            return
        self._layer_up = False
        self._layer_back.clear()
        self._poll_now.set()
        self._spawn(self._until_layer_returns())

    async def _until_layer_returns(self) -> None:
        started = self.loop.time()
        while not self._stopping:
            await asyncio.sleep(POLL_EVERY)
            try:
                # Redis may have restarted empty: rejoining every group is also the probe.
                async with asyncio.timeout(LAYER_TIMEOUT):
                    await self._rejoin_all()
            except Exception as exc:
                redis_breaker.failed(exc)
                continue
            # No await since _rejoin_all's last check: no feed can have been created unjoined.
            self._layer_up = True
            self._fast_until = self.loop.time() + RECOVERY_WINDOW
            self._layer_back.set()
            self._poll_now.set()  # read what was published before every process rejoined
            redis_breaker.succeeded()
            logger.info("channel layer back after %.1f s", self.loop.time() - started)
            return

    async def _rejoin_all(self) -> None:
        assert self.layer is not None
        if self.channel is None:
            self.channel = await self.layer.new_channel("hub.")
        joined: set[str] = set()
        while missing := [key for key in self.feeds if key not in joined]:
            for key in missing:
                await self.layer.group_add(environment_group(key), self.channel)
                joined.add(key)
        if not joined:
            await self.layer.group_discard("hub.probe", self.channel)  # any round trip will do

    # --- shutdown -----------------------------------------------------------------------------

    async def flush(self, timeout: float) -> bool:
        """Wait until every message queued for the other processes was handed to the layer.

        The graceful shutdown calls it once the connections stopped taking messages, so the
        broadcasts of the last trades leave the process. False when ``timeout`` ran out first.
        """
        if not self.shared:
            return True
        try:
            await asyncio.wait_for(self._outgoing.join(), timeout)
        except TimeoutError:
            logger.warning("%d broadcasts not sent before shutdown", self._outgoing.qsize())
            return False
        return True
