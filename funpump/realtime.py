"""Broadcasts: published after commit, serialised once, sent once per server process.

Each server process runs one :class:`Hub`. The hub owns one channel-layer channel and joins the
layer group of every environment that has a member in this process, so an event crosses the
layer once per process, not once per member. Inside the process it fans the already-serialised
frame out to the members' outboxes.

Events carry the environment's ``sequence``. The hub delivers them in sequence order per
environment (a short wait covers two commits whose callbacks race) and never gives a member an
event its ``ENVIRONMENT_STATE`` already included. The trader's own copy of its event carries its
``requestId`` and private fields (its balance) and goes to that connection only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

PROCESS_ID = f"{os.getpid()}-{secrets.token_hex(4)}"
GAP_WAIT = 0.5  # seconds to wait for a missing sequence number before skipping it
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
    gap_timer: asyncio.TimerHandle | None = None

    @property
    def empty(self) -> bool:
        return not self.members and not self.watchers and not self.listeners

    def offer(self, event: Event, loop: asyncio.AbstractEventLoop) -> None:
        if event.type == "VIRTUAL_TRADE_EXECUTED":
            self.price_changed = True
        if self.next_sequence is None:
            self.next_sequence = event.sequence
        if event.sequence < self.next_sequence:
            self._resolve(event)  # already delivered, or given up on
            return
        self.pending.setdefault(event.sequence, event)
        self._drain()
        if self.pending and self.gap_timer is None:
            self.gap_timer = loop.call_later(GAP_WAIT, self._skip_gap, loop)

    def _drain(self) -> None:
        assert self.next_sequence is not None
        while self.next_sequence in self.pending:
            event = self.pending.pop(self.next_sequence)
            for connection, member in self.members.items():
                member.offer(event, connection)
            self._resolve(event)
            self.next_sequence += 1
        if not self.pending and self.gap_timer is not None:
            self.gap_timer.cancel()
            self.gap_timer = None

    def _skip_gap(self, loop: asyncio.AbstractEventLoop) -> None:
        self.gap_timer = None
        if self.pending:
            logger.warning(
                "sequence gap at %s; delivering from %s", self.next_sequence, min(self.pending)
            )
            self.next_sequence = min(self.pending)
            self._drain()
        if self.pending:
            self.gap_timer = loop.call_later(GAP_WAIT, self._skip_gap, loop)

    @staticmethod
    def _resolve(event: Event) -> None:
        origin = event.origin
        if origin is not None and origin.delivered is not None and not origin.delivered.done():
            origin.delivered.set_result(None)

    def close(self) -> None:
        if self.gap_timer is not None:
            self.gap_timer.cancel()
        for event in self.pending.values():
            self._resolve(event)


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
        ]

    async def close(self) -> None:
        """Stop the hub's tasks (server shutdown, end of a test)."""
        with Hub._lock:
            if Hub.instance is self:
                Hub.instance = None
        self._stopping = True
        receiver = self._receiver
        if receiver is not None and self.layer is not None and self.channel is not None:
            # Wake the receive loop with a message rather than cancelling it: a cancelled
            # channels-redis receive can sit in its clean-up for as long as Redis's timeouts.
            try:
                await asyncio.wait_for(self.layer.send(self.channel, {"type": "hub.stop"}), 5)
                await asyncio.wait([receiver], timeout=10)
            except Exception as exc:
                logger.warning("hub receive loop did not stop cleanly: %r", exc)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        for feed in self.feeds.values():
            feed.close()
        self.feeds.clear()

    # --- membership ---------------------------------------------------------------------------

    async def _feed(self, environment_id: str) -> Feed:
        """The environment's feed, joining its layer group when it is new in this process."""
        feed = self.feeds.get(environment_id)
        if feed is None:
            feed = self.feeds[environment_id] = Feed()
            if self.shared and self.channel is not None:
                await self._layer_call(
                    self.layer.group_add(environment_group(environment_id), self.channel)
                )
        return feed

    async def _drop_if_empty(self, environment_id: str, feed: Feed) -> None:
        if feed.empty and self.feeds.get(environment_id) is feed:
            feed.close()
            del self.feeds[environment_id]
            if self.shared and self.channel is not None:
                await self._layer_call(
                    self.layer.group_discard(environment_group(environment_id), self.channel)
                )

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

    def submit(self, event: Event) -> None:
        """An event committed in this process: deliver it here, then tell the other processes."""
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
        feed.offer(event, self.loop)

    async def _receive(self) -> None:
        assert self.layer is not None
        while not self._stopping:
            try:
                if self.channel is None:
                    self.channel = await self.layer.new_channel("hub.")
                    self._ready.set()
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("channel layer receive failed (%r); retrying", exc)
                await asyncio.sleep(1)
                # Redis may have restarted empty: group memberships are gone with it.
                await self._rejoin_groups()
                continue
            if message.get("type") == "touch":
                if message.get("process") != PROCESS_ID:
                    self.touch(str(message.get("environment")))
                continue
            if message.get("type") == "signal":
                if message.get("process") != PROCESS_ID and isinstance(
                    message.get("payload"), dict
                ):
                    self._signal(str(message.get("environment")), message["payload"])
                continue
            if message.get("type") == "market":
                feed = self.feeds.get(str(message.get("environment")))
                if feed is not None and isinstance(message.get("data"), dict):
                    feed.latest = message["data"]
                    feed.price_changed = True
                continue
            if message.get("type") != "fanout" or message.get("process") == PROCESS_ID:
                continue
            try:
                self._deliver(
                    Event(
                        environment_id=str(message["environment"]),
                        sequence=int(message["sequence"]),
                        type=str(message.get("kind", "")),
                        data={},
                        text=str(message["text"]),
                    )
                )
            except (KeyError, TypeError, ValueError):
                logger.warning("ignored a malformed layer message")

    async def _publish(self) -> None:
        assert self.layer is not None
        while True:
            group, message = await self._outgoing.get()
            await self._layer_call(self.layer.group_send(group, message))

    async def _refresh_groups(self) -> None:
        while True:
            await asyncio.sleep(GROUP_REFRESH)  # the layer expires group memberships
            await self._rejoin_groups()

    async def _rejoin_groups(self) -> None:
        if self.layer is None or self.channel is None:
            return
        for environment_id in list(self.feeds):
            await self._layer_call(
                self.layer.group_add(environment_group(environment_id), self.channel)
            )

    @staticmethod
    async def _layer_call(call: Any) -> None:
        try:
            await call
        except Exception as exc:
            # The database is the truth: a lost broadcast is repaired by the client re-joining
            # when it sees a gap in the sequence.
            logger.warning("channel layer call failed: %r", exc)
