"""The hub: one per server process, between the channel layer and the connections.

The hub owns the process's only channel-layer channel and joins the layer group of every key
(environment, feed, signal key) followed in this process, so a message crosses the layer once
per process, not once per connection. Layer messages are dispatched from a table by their type.

The layer is a fast path, not the record: trades and chat are stored with their sequence, so a
hub that misses an event (Redis was down, the publishing process died) reads it back from the
database through the registered :class:`History` and delivers it in its place, built exactly as
it was broadcast. While the layer is down the hub polls the database for the latest sequence of
its environments, so events of the other processes still arrive, a fraction of a second late.

Once a second (``FUNPUMP_PARTICIPANTS_EVERY``) the hub reads the participant counts of the
environments with members here (one presence read for all, registered with the history) and
tells each member whose last known count differs (``PARTICIPANTS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.db import connections

import protocol
from kernel.breaker import redis_breaker
from kernel.db import db_call
from kernel.realtime.fanout import Event, Fanout, History, Member
from kernel.realtime.feeds import WINDOW, CoalescedFeed, Value, market_key

logger = logging.getLogger(__name__)
T = TypeVar("T")

PROCESS_ID = f"{os.getpid()}-{secrets.token_hex(4)}"
GAP_WAIT = 0.25  # seconds a missing event may take over the layer before it is read back
TRADER_GAP_WAIT = 0.02  # the same when a sender of this process waits behind the missing event
POLL_EVERY = 0.25  # while the layer is down: how often the database is asked for new events
CHECK_EVERY = 2.0  # while it is up: the same, for events a lost process never broadcast
RECOVERY_WINDOW = 2.0  # after the layer returns, poll fast while every process rejoins it
FILL_LIMIT = 500  # events read back per query
LAYER_TIMEOUT = 2.0  # seconds one layer call (send, group change) may take
GROUP_REFRESH = 3600  # seconds between re-adds of layer groups (the layer expires them)
# Seconds a room's events and touches skip the layer after its group was found to hold no other
# process (a process that starts following the key meanwhile reads the events back from the
# database, polling every POLL_EVERY for this long after it joined the group, and recomputes
# its feed once it is over).
ALONE_FOR = 0.5
RECOVERABLE = frozenset({"fanout", "touch"})  # layer messages a newcomer can do without


def participants_every() -> float:
    """Seconds between ``PARTICIPANTS`` roll calls (at most one per member per period); 0 (the
    setting ``FUNPUMP_PARTICIPANTS_EVERY``): none."""
    return float(settings.FUNPUMP_PARTICIPANTS_EVERY)


Listener = Callable[[dict[str, Any]], None]


def layer_group(key: str) -> str:
    """The channel-layer group of a key: an environment id, a feed key or a signal key."""
    return f"env.{key}"


def fanout_message(event: Event) -> dict[str, Any]:
    return {
        "type": "fanout",
        "process": PROCESS_ID,
        "environment": event.environment_id,
        "sequence": event.sequence,
        "kind": event.type,
        "text": event.text,
    }


def touch_message(key: str) -> dict[str, Any]:
    return {"type": "touch", "environment": key, "process": PROCESS_ID}


def signal_message(key: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": "signal", "environment": key, "payload": payload, "process": PROCESS_ID}


def announce(key: str, message: dict[str, Any], here: Callable[[Hub], None]) -> None:
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
        async_to_sync(layer.group_send)(layer_group(key), message)
    except Exception as exc:
        logger.warning("could not announce %s to the other processes: %r", key, exc)


_history: History | None = None


def register_history(history: History) -> None:
    global _history
    _history = history


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
        self.fanouts: dict[str, Fanout] = {}  # environment id → its members here
        self.feeds: dict[str, CoalescedFeed] = {}  # feed key → its subscribers here
        self.listeners: dict[str, dict[str, Listener]] = {}  # signal key → connection → callback
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
        self._alone: dict[str, float] = {}  # layer group → when no other process was in it
        self._background: set[asyncio.Task[None]] = set()
        self._chores: set[str] = set()

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
        # Even alone (the in-memory layer) the hub asks the database for the latest sequences:
        # a management command (a new round, say) commits events no layer carries to it.
        self._tasks = [
            self.loop.create_task(self._publish_feeds()),
            self.loop.create_task(self._watch_sequences()),
        ]
        if participants_every() > 0:
            self._tasks.append(self.loop.create_task(self._roll_call()))
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
        for fanout in self.fanouts.values():
            fanout.close()
        self.fanouts.clear()
        self.feeds.clear()
        self.listeners.clear()

    # --- layer groups -------------------------------------------------------------------------

    def _followed(self) -> set[str]:
        """The keys this process follows: the layer groups its channel is in."""
        return {*self.fanouts, *self.feeds, *self.listeners}

    async def _group_add(self, key: str) -> None:
        if self.shared and self.channel is not None:
            channel = self.channel
            await self._layer_call(lambda: self.layer.group_add(layer_group(key), channel))
            # A process that found the group empty of others just before may not send the
            # room's next events for ALONE_FOR: read them from the database meanwhile, and
            # recompute a feed (rewards, prices) once that is over, whatever it missed.
            self._fast_until = max(self._fast_until, self.loop.time() + ALONE_FOR + POLL_EVERY)
            self._poll_now.set()
            self.loop.call_later(ALONE_FOR + POLL_EVERY, self.touch, key)

    async def _group_discard_unfollowed(self, key: str) -> None:
        self._alone.pop(layer_group(key), None)
        if key not in self._followed() and self.shared and self.channel is not None:
            channel = self.channel
            await self._layer_call(lambda: self.layer.group_discard(layer_group(key), channel))

    # --- environment members (kernel/realtime/fanout.py) ----------------------------------------

    async def join(
        self,
        environment_id: str,
        connection: str,
        push: Callable[[str], None],
        react: Callable[[Event], None] | None = None,
        reacts_to: frozenset[str] = frozenset(),
    ) -> None:
        """Register a connection; it gets events once :meth:`ready` names its state's sequence.

        ``react(event)`` is called right after an event whose type is in ``reacts_to`` was sent
        to it (to re-read its state after a new round, say: :meth:`hold`, then :meth:`ready`
        and :meth:`release` once the state is sent)."""
        fanout = self.fanouts.get(environment_id)
        if fanout is None:
            new = environment_id not in self._followed()
            fanout = self.fanouts[environment_id] = Fanout()
            if new:
                await self._group_add(environment_id)
        fanout.members.setdefault(connection, Member(push=push, react=react, reacts_to=reacts_to))

    def ready(
        self,
        environment_id: str,
        connection: str,
        sequence: int,
        participants: int | None = None,
    ) -> None:
        """The member's state (up to ``sequence``, counting ``participants``) was sent: deliver
        what came after it."""
        fanout = self.fanouts.get(environment_id)
        member = fanout.members.get(connection) if fanout else None
        if fanout is None or member is None:
            return
        if fanout.next_sequence is None:
            fanout.next_sequence = sequence + 1
        if participants is not None:
            member.participants = participants
        member.ready(sequence)
        self._watch_gap(environment_id, fanout)

    def hold(self, environment_id: str, connection: str) -> None:
        """The member is about to publish an event: keep its broadcasts back until
        :meth:`release`, so its own copy takes the public one's place among them."""
        fanout = self.fanouts.get(environment_id)
        member = fanout.members.get(connection) if fanout else None
        if member is not None:
            member.holding += 1

    def release(
        self,
        environment_id: str,
        connection: str,
        sequence: int | None = None,
        own: str | None = None,
    ) -> None:
        """Send the member what :meth:`hold` kept back, in order, with ``own`` (the text of its
        own copy) in place of the event ``sequence``; without them (a refusal, a replay) just
        what was kept back."""
        fanout = self.fanouts.get(environment_id)
        member = fanout.members.get(connection) if fanout else None
        if fanout is None or member is None:
            return
        member.release(sequence, own)
        self._watch_gap(environment_id, fanout)  # a sender waiting on a gap waits less

    def owes(self, connection: str) -> bool:
        """Whether ``connection`` still waits for its own copy of an event its request committed
        (behind an earlier event of another process): the drain waits for it before the 1012."""
        for fanout in self.fanouts.values():
            member = fanout.members.get(connection)
            if member is not None and member.owes:
                return True
        return False

    async def leave(self, environment_id: str, connection: str) -> None:
        fanout = self.fanouts.get(environment_id)
        if fanout is None:
            return
        fanout.members.pop(connection, None)
        if not fanout.members and self.fanouts.get(environment_id) is fanout:
            fanout.close()
            del self.fanouts[environment_id]
            await self._group_discard_unfollowed(environment_id)

    def periodically(self, name: str, every: float, call: Callable[[], Awaitable[object]]) -> None:
        """Await ``call()`` every ``every`` seconds while the hub runs (once per ``name``,
        however often asked): process-wide chores such as the apps' timers. A failure is
        logged and the next period tried."""
        if name in self._chores or self._stopping:
            return

        async def chore() -> None:
            while not self._stopping:
                await asyncio.sleep(every)
                try:
                    await call()
                except Exception:
                    logger.exception("periodic %s failed", name)

        self._chores.add(name)
        self._tasks.append(self.loop.create_task(chore()))

    async def _roll_call(self) -> None:
        """Every :func:`participants_every` seconds: read the participant counts of the environments
        with members here (one presence read for all, off the event loop) and send
        ``PARTICIPANTS`` to each member whose last known count differs. Every process does this
        for its own members, so counts changed by other processes reach them within a period,
        and no member gets more than one per period."""
        while not self._stopping:
            await asyncio.sleep(participants_every())
            history = _history
            environment_ids = list(self.fanouts)
            if history is None or history.participants is None or not environment_ids:
                continue
            try:
                counts = await asyncio.to_thread(history.participants, environment_ids)
            except Exception as exc:
                logger.debug("could not read the participant counts: %r", exc)
                continue
            for environment_id, count in counts.items():
                fanout = self.fanouts.get(environment_id)
                if fanout is not None:
                    self._tell_participants(environment_id, fanout, count)

    def _tell_participants(self, environment_id: str, fanout: Fanout, count: int) -> None:
        text = ""
        for member in list(fanout.members.values()):
            if member.last is None or member.participants in (None, count):
                continue  # its state is not sent yet, or it knows
            if not text:
                text = protocol.encode(
                    "PARTICIPANTS",
                    protocol.Participants(environmentId=environment_id, participants=count),
                )
            member.participants = count
            member.push(text)

    # --- coalesced feeds (kernel/realtime/feeds.py) --------------------------------------------

    async def subscribe_feed(
        self,
        key: str,
        connection: str,
        push: Callable[[str], None],
        compute: Callable[[], Awaitable[Value]],
        kind: str = "PRICE_UPDATE",
        changed_by: frozenset[str] = frozenset(),
    ) -> None:
        """Send ``connection`` a ``kind`` message when ``key``'s feed changes, at most one per
        window.

        ``compute`` gives the message's data; the hub awaits it once per feed per window,
        whatever the number of subscribers, and sends them all the same frame. ``changed_by``:
        the event types of environment ``key`` that change the feed.
        """
        feed = self.feeds.get(key)
        if feed is None:
            new = key not in self._followed()
            feed = self.feeds[key] = CoalescedFeed(kind, compute, changed_by)
            if new:
                await self._group_add(key)
        feed.subscribers[connection] = push
        feed.compute, feed.kind, feed.changed_by = compute, kind, changed_by

    async def subscribe_market(
        self, mint: str, connection: str, push: Callable[[str], None], snapshot: Value
    ) -> None:
        """:meth:`subscribe_feed` for a real mint's price, pushed by the market feed."""
        key = market_key(mint)

        async def latest() -> Value:
            feed = self.feeds.get(key)
            return (feed.latest if feed else None) or snapshot

        await self.subscribe_feed(key, connection, push, latest)

    async def unsubscribe_feed(self, key: str, connection: str) -> None:
        feed = self.feeds.get(key)
        if feed is None:
            return
        feed.subscribers.pop(connection, None)
        if not feed.subscribers and self.feeds.get(key) is feed:
            del self.feeds[key]
            await self._group_discard_unfollowed(key)

    def touch_everywhere(self, key: str) -> None:
        self.touch(key)
        if self.shared:
            self._outgoing.put_nowait((layer_group(key), touch_message(key)))

    def touch(self, key: str) -> None:
        """Something ``key``'s subscribers see changed: send them an update next window."""
        feed = self.feeds.get(key)
        if feed is not None:
            feed.changed = True

    async def _publish_feeds(self) -> None:
        # A fixed cadence (not sleep-after-work), so a window's work does not stretch the next.
        next_window = self.loop.time()
        while True:
            next_window = max(next_window + WINDOW, self.loop.time())
            await asyncio.sleep(next_window - self.loop.time())
            # One update per feed per window: skip one whose last went out this window.
            due = next_window - WINDOW + 0.001
            changed = [
                feed
                for feed in self.feeds.values()
                if feed.changed and feed.subscribers and feed.sent_at <= due
            ]
            for feed in changed:
                feed.changed = False
            await asyncio.gather(*(self._send_feed(feed, next_window) for feed in changed))

    async def _send_feed(self, feed: CoalescedFeed, window: float) -> None:
        try:
            data = await feed.compute()
        except Exception:
            logger.exception("%s failed", feed.kind)
            feed.changed = True  # try again next window
            return
        text = protocol.encode(feed.kind, data)
        feed.sent_at = window
        for push in list(feed.subscribers.values()):
            push(text)

    # --- signals (kernel/realtime/signals.py) --------------------------------------------------

    async def listen(self, key: str, connection: str, callback: Listener) -> None:
        """Hand ``connection`` every signal sent to ``key`` (:func:`kernel.realtime.signal`)."""
        listeners = self.listeners.get(key)
        if listeners is None:
            new = key not in self._followed()
            listeners = self.listeners[key] = {}
            if new:
                await self._group_add(key)
        listeners[connection] = callback

    async def unlisten(self, key: str, connection: str) -> None:
        listeners = self.listeners.get(key)
        if listeners is None:
            return
        listeners.pop(connection, None)
        if not listeners and self.listeners.get(key) is listeners:
            del self.listeners[key]
            await self._group_discard_unfollowed(key)

    def signal_everywhere(self, key: str, payload: dict[str, Any]) -> None:
        self._signal(key, payload)
        if self.shared:
            self._outgoing.put_nowait((layer_group(key), signal_message(key, payload)))

    def _signal(self, key: str, payload: dict[str, Any]) -> None:
        for callback in list(self.listeners.get(key, {}).values()):
            try:
                callback(payload)
            except Exception:
                logger.exception("signal listener of %s failed", key)

    # --- events -------------------------------------------------------------------------------

    def submit(self, event: Event) -> None:
        """An event committed in this process: deliver it here, then tell the other processes."""
        self._deliver(event)
        if self.shared:
            self._outgoing.put_nowait((layer_group(event.environment_id), fanout_message(event)))

    def _deliver(self, event: Event) -> None:
        feed = self.feeds.get(event.environment_id)
        if feed is not None:
            feed.saw(event.type, event.sequence)
        fanout = self.fanouts.get(event.environment_id)
        if fanout is None:
            return
        fanout.offer(event)
        self._watch_gap(event.environment_id, fanout)

    # --- gaps -----------------------------------------------------------------------------------

    def _watch_gap(self, environment_id: str, fanout: Fanout) -> None:
        """Schedule reading missing events back, unless they are about to arrive anyway."""
        if not fanout.gap:
            if fanout.gap_timer is not None:
                fanout.gap_timer.cancel()
                fanout.gap_timer = None
            return
        if fanout.filling:
            return
        assert fanout.next_sequence is not None
        # With the layer up, a missing event is most likely still on its way, though a sender
        # of this process waiting behind it should not wait long for a slow layer; with the
        # layer down it can only come from the database.
        # Alone, an event of this process may still be on its way from the committing thread.
        wait = (TRADER_GAP_WAIT if fanout.sender_waits else GAP_WAIT) if self._layer_up else 0.0
        due = self.loop.time() + wait
        if fanout.gap_timer is not None:
            if fanout.gap_timer.when() <= due:
                return
            fanout.gap_timer.cancel()  # it waited for an event that has arrived since
        fanout.gap_timer = self.loop.call_at(due, self._gap_due, environment_id, fanout)

    def _gap_due(self, environment_id: str, fanout: Fanout) -> None:
        fanout.gap_timer = None
        if self.fanouts.get(environment_id) is not fanout or not fanout.gap:
            return
        if _history is None:
            logger.warning(
                "sequence gap at %s in %s and no history to read it from: skipped",
                fanout.next_sequence,
                environment_id,
            )
            fanout.skip()
            self._watch_gap(environment_id, fanout)
            return
        fanout.filling = True
        self._spawn(self._fill(environment_id, fanout, _history))

    async def _fill(self, environment_id: str, fanout: Fanout, history: History) -> None:
        """Read the missing events from the database and deliver them in order; a database
        error is retried (members wait; nothing is skipped that the database may hold)."""
        failures = 0
        try:
            while not self._stopping and self.fanouts.get(environment_id) is fanout and fanout.gap:
                start = fanout.next_sequence
                assert start is not None
                upto = min(max([fanout.horizon, *fanout.pending]), start + FILL_LIMIT - 1)
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
                missing = fanout.fill(events, upto)
                if missing:
                    logger.warning(
                        "events %s-%s of %s are not in the database: skipped",
                        missing[0],
                        missing[-1],
                        environment_id,
                    )
        finally:
            fanout.filling = False
            if self.fanouts.get(environment_id) is fanout:
                self._watch_gap(environment_id, fanout)

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
        environment_ids = [key for key in {*self.fanouts, *self.feeds} if not key.startswith("_")]
        if history is None or not environment_ids:
            return
        try:
            latest = await self._read(history.latest, environment_ids)
        except Exception as exc:
            logger.debug("could not read the latest sequences: %r", exc)
            return
        for environment_id, sequence in latest.items():
            feed = self.feeds.get(environment_id)
            if feed is not None and sequence > feed.sequence:
                feed.sequence = sequence
                feed.changed = True  # an event of another process, maybe a trade
            fanout = self.fanouts.get(environment_id)
            if fanout is not None and sequence > fanout.horizon:
                fanout.horizon = sequence
                self._watch_gap(environment_id, fanout)

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
        """Dispatch a layer message by its type; this process's own messages come back to it
        through the groups it is in, and were handled when they were sent."""
        handler = LAYER_MESSAGES.get(message.get("type", ""))
        if handler is not None and message.get("process") != PROCESS_ID:
            handler(self, message)

    def _on_fanout(self, message: dict[str, Any]) -> None:
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

    def _on_touch(self, message: dict[str, Any]) -> None:
        self.touch(str(message.get("environment")))

    def _on_signal(self, message: dict[str, Any]) -> None:
        if isinstance(message.get("payload"), dict):
            self._signal(str(message.get("environment")), message["payload"])

    def _on_market(self, message: dict[str, Any]) -> None:
        feed = self.feeds.get(str(message.get("environment")))
        if feed is not None and isinstance(message.get("data"), dict):
            feed.latest = message["data"]
            feed.changed = True

    async def _publish(self) -> None:
        assert self.layer is not None
        while True:
            group, message = await self._outgoing.get()
            try:
                # While the layer is down the message is dropped: the other processes read the
                # events from the database (touches and signals are lost; see the docs).
                await self._layer_call(functools.partial(self._send_to_others, group, message))
            finally:
                self._outgoing.task_done()  # counted by flush()

    async def _send_to_others(self, group: str, message: dict[str, Any]) -> None:
        """Send ``message`` to ``group`` unless this process is its only member.

        A group message reaches every member, this process's channel included, though the hub
        has already handled what it sends. When no other process follows the key (one server
        process, or a room nobody elsewhere is in) that would cost the send's four Redis round
        trips and a receive, to be dropped: one read of the group's members spares them.
        """
        assert self.layer is not None
        if isinstance(self.layer, RedisChannelLayer) and not await self._others_following(
            group, recoverable=message.get("type") in RECOVERABLE
        ):
            return
        await self.layer.group_send(group, message)

    async def _others_following(self, group: str, *, recoverable: bool) -> bool:
        """:meth:`_others_in`, or for a ``recoverable`` message the answer "none" for ALONE_FOR
        after Redis last gave it: a busy room of one process reads the group once per ALONE_FOR,
        not once per event. A room's events are stored (a newcomer reads them back) and a touch
        only says "recompute" (a newcomer recomputes its feed once ALONE_FOR is over)."""
        now = self.loop.time()
        if recoverable and now - self._alone.get(group, -math.inf) < ALONE_FOR:
            return False
        others = await self._others_in(group)
        if others:
            self._alone.pop(group, None)
        elif recoverable:
            self._alone[group] = now
        return others

    async def _others_in(self, group: str) -> bool:
        """Whether a channel other than this hub's is in ``group`` (channels-redis keeps a
        group as a sorted set of its channels scored by when they were added; older than its
        ``group_expiry`` they no longer count)."""
        layer = self.layer
        assert isinstance(layer, RedisChannelLayer)
        redis = layer.connection(layer.consistent_hash(group))
        members = await redis.zrangebyscore(
            layer._group_key(group), time.time() - layer.group_expiry, "+inf"
        )
        own = self.channel.encode() if self.channel is not None else None
        return any(member != own for member in members)

    async def _refresh_groups(self) -> None:
        while True:
            await asyncio.sleep(GROUP_REFRESH)  # the layer expires group memberships
            await self._rejoin_groups()

    async def _rejoin_groups(self) -> None:
        for key in self._followed():
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
            # No await since _rejoin_all's last check: no key can have been followed unjoined.
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
        while missing := self._followed() - joined:
            for key in missing:
                await self.layer.group_add(layer_group(key), self.channel)
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


# Layer messages by type; any other type (the hub's own "hub.stop" wake-up) is ignored.
LAYER_MESSAGES: dict[str, Callable[[Hub, dict[str, Any]], None]] = {
    "fanout": Hub._on_fanout,
    "touch": Hub._on_touch,
    "signal": Hub._on_signal,
    "market": Hub._on_market,
}
