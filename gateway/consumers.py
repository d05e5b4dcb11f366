"""The ``/ws`` gateway: authenticate, decode, dispatch, answer.

The consumer stays thin: it checks who is asking and what they may do, calls one service per
message in one database unit of work, and turns domain errors into ``ERROR`` frames. Every frame
it sends goes through one ``push`` per connection, so replies and broadcasts keep their order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.core.exceptions import ValidationError
from django.http.request import split_domain_port, validate_host
from pydantic import BaseModel

import protocol
from environments.models import environment_id_validator
from environments.rounds import rounds_start_due
from environments.selectors import (
    environment_events,
    environment_sequences,
    price_target,
    price_update,
)
from environments.services import (
    chat_post,
    participant_counts,
    participant_enter,
    participant_leave,
    participant_state,
)
from gateway.voice import VoiceHandlers
from idempotency.services import Replay
from kernel import caps, lifecycle, metrics
from kernel.db import db_call
from kernel.ratelimit import Grant, message_limiter
from kernel.realtime import (
    PROCESS_ID,
    Event,
    History,
    Hub,
    market_key,
    register_history,
    rewards_key,
)
from protocol.errors import DomainError, ErrorCode
from rewards.selectors import reward_view
from rewards.services import claim_rewards
from trading.market import market_interest_add, market_interest_remove, market_snapshot
from trading.services import trade_execute, trade_quote
from wallets.services import token_wallet, user_wallet

logger = logging.getLogger(__name__)

# Hubs read the events they missed back from the database (the kernel imports no app).
register_history(
    History(
        events=environment_events, latest=environment_sequences, participants=participant_counts
    )
)

OUTBOX_LIMIT = 1000  # frames queued for a client before it is considered gone
# A server's scope extension that writes a text frame at once (funpump.serve's daphne has it):
# ``write(text)``, bounding what a slow reader holds by bytes itself (4009).
WRITE_TEXT = "funpump.write_text"
# A trade moves its environment's price, and a new round puts it back at the curve's start; a
# chat line does not.
PRICE_CHANGED_BY = frozenset({"VIRTUAL_TRADE_EXECUTED", "ROUND_STARTED"})
# After these events a member gets a fresh ENVIRONMENT_STATE (its balance was reset).
STATE_RESET_BY = frozenset({"ROUND_STARTED"})
ROUND_CHECK_EVERY = 30.0  # seconds between checks for rooms whose new round is due
_connection_ids = itertools.count(1)
# The fresh states being sent after a new round, across the process's connections.
_STATE_RESETS: set[asyncio.Future[None]] = set()

RATE_EXEMPT = frozenset({"HEARTBEAT"})
# Application close codes (docs/protocol.md lists them with the advice to clients).
CLOSE_SLOW_READER = 4009
CLOSE_IDLE = 4408
CLOSE_TOO_MANY_CONNECTIONS = 4429

Handler = Callable[["RoomConsumer", Any, str | None], Awaitable[None]]


class Published(Protocol):
    """What a publishing service returns: its event's sequence and the sender's own copy."""

    @property
    def sequence(self) -> int: ...

    @property
    def own(self) -> BaseModel | dict[str, Any]: ...


DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether a handshake's ``Origin`` is the page this server serves (docs/protocol.md).

    Browsers always send ``Origin``; other clients send none and are allowed. A browser's origin
    is allowed when it equals an entry of ``CSRF_TRUSTED_ORIGINS``, or when its host is in
    ``ALLOWED_HOSTS``, its scheme is the connection's (``http`` for ws, ``https`` for wss) and its
    port is the one the client connected to (the ``Host`` header's; 80/443 when it names none).
    """
    headers = dict(scope.get("headers", []))
    origin = headers.get(b"origin")
    if origin is None:
        return True
    text = origin.decode("latin-1")
    if text in settings.CSRF_TRUSTED_ORIGINS:
        return True
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    forwarded = headers.get(b"x-forwarded-proto")
    if settings.NUM_PROXIES and forwarded:
        # The left-most value is the client's, as Django reads SECURE_PROXY_SSL_HEADER.
        proto = forwarded.decode("latin-1").split(",")[0].strip().lower()
        scheme = "https" if proto in {"https", "wss"} else "http"
    parts = urlsplit(text)
    if parts.scheme != scheme or parts.path or parts.query or parts.fragment:
        return False
    # split_domain_port gives ("", "") for anything that is not host[:digits].
    domain, port = split_domain_port(parts.netloc)
    _, host_port = split_domain_port(headers.get(b"host", b"").decode("latin-1"))
    expected = int(host_port) if host_port else DEFAULT_PORTS[scheme]
    actual = int(port) if port else DEFAULT_PORTS[scheme]
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS) and actual == expected


class RoomConsumer(VoiceHandlers, AsyncWebsocketConsumer):  # type: ignore[misc]
    """One client connection."""

    wallet: str | None
    connection_id: str
    joined: set[str]
    writer: asyncio.Task[None] | None = None  # the outbox's, where frames are not written at once
    close_sent = False  # set once the socket was told to close

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        """Channels' consumer loop without its costs per frame.

        No channel-layer channel per connection: the process's hub owns the only one, so a
        socket costs no Redis listener and layer events never reach Channels' getattr dispatch.
        With nothing but the socket to read, each frame is awaited directly, not through a new
        task and ``asyncio.wait`` as Channels does to read two sources.
        """
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its thread hop: before every handler Channels closes stale
        database connections through ``sync_to_async`` (about a fifth of a heartbeat's cost).
        The event loop does no ORM work here: every unit runs through ``kernel.db.db_call``,
        whose ``database_sync_to_async`` closes them on its worker thread around the call."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        headers = dict(self.scope.get("headers", []))
        if not origin_allowed(self.scope):
            await self.close()  # before accept: the handshake is refused with HTTP 403
            return
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            self.wallet = token_wallet(token.strip()) if scheme == "Bearer" else None
            if self.wallet is None:
                await self.close()
                return
        else:
            self.wallet = user_wallet(self.scope.get("user"))
        self.connection_id = f"{PROCESS_ID}.{next(_connection_ids)}"
        # The address HTTP throttling sees too (behind DJANGO_NUM_PROXIES proxies, the client's).
        address = caps.client_address(self.scope)
        self.client_ip = address or "unknown"
        # Holdings are the wallet's across its connections; an anonymous connection's its own.
        self.owner = f"wallet:{self.wallet}" if self.wallet else f"connection:{self.connection_id}"
        self.slots: list[str] = []
        owners = caps.connection_owners(self.wallet, address)
        refused = await caps.connection_slots().take(self.connection_id, owners)
        if refused is not None:
            # Accepted, then closed: a browser sees this code and reason, not a bare 403.
            self.refused = True  # frames sent before the close arrives are ignored
            self.handling = asyncio.Lock()
            await self.accept()
            kind = "wallet" if refused.startswith("wallet:") else "address"
            await self.close(
                code=CLOSE_TOO_MANY_CONNECTIONS, reason=f"too many connections from this {kind}"
            )
            return
        self.slots = [owner for owner, _ in owners]
        self.joined = set()
        self.last_joined: str | None = None
        # (mint, environmentId) → the key of the feed it subscribed to
        self.price_feeds: dict[tuple[str, str | None], str] = {}
        self.write_now: Callable[[str], None] | None = self.scope.get("extensions", {}).get(
            WRITE_TEXT
        )
        self.hub = await Hub.get()
        # Rooms with new_round_after start their next round once due (idempotent across
        # processes: the service re-checks under the environment's lock).
        self.hub.periodically("rounds", ROUND_CHECK_EVERY, db_call(rounds_start_due))
        await self.accept()
        self.handling = asyncio.Lock()  # held while a message is handled; the drain waits on it
        if not lifecycle.register(self):
            await self.close(code=lifecycle.CLOSE_RESTART)  # shutdown began during the handshake
            return
        metrics.CONNECTIONS.inc()
        self.counted = True
        logger.info(
            "connected",
            extra={"event": "connect", "wallet": self.wallet, "connection": self.connection_id},
        )
        if self.write_now is None:
            self.outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=OUTBOX_LIMIT)
            self.writer = asyncio.create_task(self._write())
        self.last_heard = time.monotonic()
        self.idle_timer = asyncio.get_running_loop().call_later(
            settings.FUNPUMP_IDLE_TIMEOUT, self._check_idle
        )

    def _check_idle(self) -> None:
        """Close a connection that has sent nothing for FUNPUMP_IDLE_TIMEOUT seconds (4408)."""
        silent = time.monotonic() - self.last_heard
        timeout = settings.FUNPUMP_IDLE_TIMEOUT
        if silent >= timeout:
            logger.info("closing idle connection %s", self.connection_id)
            self.closing = asyncio.ensure_future(self.close(code=CLOSE_IDLE))
        else:
            self.idle_timer = asyncio.get_running_loop().call_later(
                timeout - silent, self._check_idle
            )

    async def disconnect(self, code: int) -> None:
        slots, self.slots = getattr(self, "slots", []), []
        if slots:
            await caps.connection_slots().give_back(self.connection_id, slots)
        owner = getattr(self, "owner", None)
        if owner is not None:
            caps.JOINED.release_connection(owner, self.connection_id)
            caps.SUBSCRIBED.release_connection(owner, self.connection_id)
        if getattr(self, "counted", False):
            metrics.CONNECTIONS.dec()
            self.counted = False
            logger.info(
                "disconnected",
                extra={
                    "event": "disconnect",
                    "wallet": self.wallet,
                    "connection": self.connection_id,
                    "code": code,
                },
            )
        idle_timer = getattr(self, "idle_timer", None)
        if idle_timer is not None:
            idle_timer.cancel()
        if self.writer is not None:
            self.writer.cancel()
            # The cancelled task's traceback holds this consumer: without the task, nothing
            # makes a reference cycle of the connection, and it is freed without a full GC.
            self.writer = None
        for key in list(getattr(self, "price_feeds", {})):
            await self._drop_price_feed(key)
        if getattr(self, "rewards_subscribed", False) and self.wallet:
            await self.hub.unsubscribe_feed(rewards_key(self.wallet), self.connection_id)
        if getattr(self, "voice", None) is not None:
            await self._voice_stop(reason="disconnected")
        joined = list(getattr(self, "joined", ()))
        for environment_id in joined:
            await self.hub.leave(environment_id, self.connection_id)
        if joined and self.wallet:
            await db_call(participant_leave)(
                environment_ids=joined, wallet=self.wallet, connection=self.connection_id
            )

    # --- outbound -----------------------------------------------------------------------------

    def push(self, text: str) -> None:
        """Send a frame to this client, in the order pushed; a client that stops reading is
        disconnected (4009).

        Where the server offers it, the frame is written at once: a broadcast to a thousand
        members then costs no queue, task switch or ASGI message per member, and the server
        bounds what a slow reader holds. Elsewhere (other ASGI servers, tests) the frame goes
        through the outbox and its writer task.
        """
        if self.write_now is not None:
            self.write_now(text)
            return
        try:
            self.outbox.put_nowait(text)
        except asyncio.QueueFull:
            logger.warning("outbox full, closing %s", self.connection_id)
            if self.writer is not None:
                self.writer.cancel()
            self.closing = asyncio.ensure_future(self.close(code=CLOSE_SLOW_READER))

    async def _write(self) -> None:
        try:
            while True:
                text = await self.outbox.get()
                if self.close_sent:  # what is still queued has nowhere to go
                    return
                await self.send(text_data=text)
        except asyncio.CancelledError:
            raise
        except Exception:
            if self.close_sent:  # the server refused a frame after the close: nothing is lost
                return
            # Nothing else would notice a dead writer: the socket would stay open and silent.
            logger.exception("writing to %s failed; closing it", self.connection_id)
            await self.close(code=1011)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        self.close_sent = True  # the outbox's writer stops: a send after it is refused
        await super().close(code=code, reason=reason)

    def reply(self, message_type: str, data: Any, request_id: str | None) -> None:
        self.push(protocol.encode(message_type, data, request_id))

    def error(self, error: DomainError, request_id: str | None) -> None:
        metrics.ERRORS.labels(error.code.value).inc()
        self.push(protocol.error_frame(error, request_id))

    # --- inbound ------------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if getattr(self, "refused", False):
            return
        self.last_heard = time.monotonic()
        if text_data is None:
            self._voice_audio(bytes_data or b"")
            return
        try:
            request = protocol.decode_envelope(text_data)
        except DomainError as exc:
            if await self._within_limit(1, exc.request_id):
                self.error(exc, exc.request_id)
            return
        items = request.data if isinstance(request.data, list) else [request.data]
        if isinstance(request.data, list) and not 1 <= len(items) <= protocol.MAX_BATCH:
            if await self._within_limit(1, request.request_id):
                self.error(
                    protocol.invalid(
                        f"a batch holds 1-{protocol.MAX_BATCH} items", items=len(items)
                    ),
                    request.request_id,
                )
            return
        grant = Grant(len(items), 0)
        if request.type not in RATE_EXEMPT:
            grant = await self._count(len(items))
        for index, item in enumerate(items[: grant.granted]):
            self.batch_item = index  # batch items sharing a requestId are idempotent one by one
            await self.handle(request.type, item, request.request_id)
        self._refuse_over_limit(len(items) - grant.granted, grant, request.request_id)

    async def _within_limit(self, wanted: int, request_id: str | None) -> bool:
        """Count one message; answer RATE_LIMITED and return False when it is over the limit."""
        grant = await self._count(wanted)
        self._refuse_over_limit(wanted - grant.granted, grant, request_id)
        return grant.granted == wanted

    async def _count(self, wanted: int) -> Grant:
        """Count ``wanted`` messages against the sender's sliding window."""
        key = f"wallet:{self.wallet}" if self.wallet else f"ip:{self.client_ip}"
        # While Redis is down the limiter counts per process (kernel/ratelimit.py): it neither
        # waits on Redis nor raises.
        return await message_limiter().acquire(key, wanted)

    def _refuse_over_limit(self, count: int, grant: Grant, request_id: str | None) -> None:
        if count:
            metrics.RATE_LIMITED.inc(count)
        details = {"retryAfterMs": grant.retry_after_ms}
        for _ in range(count):
            self.error(
                DomainError(ErrorCode.RATE_LIMITED, "too many messages", details), request_id
            )

    async def handle(self, message_type: str, data: Any, request_id: str | None) -> None:
        """Validate and run one message; every failure becomes one ``ERROR`` frame."""
        metrics.MESSAGES.labels(message_type).inc()
        started = time.perf_counter()
        context: dict[str, Any] = {
            "type": message_type,
            "wallet": self.wallet,
            "connection": self.connection_id,
            "requestId": request_id,
        }
        try:
            payload = protocol.validate_data(message_type, data)
            context["environment"] = getattr(payload, "environmentId", None)
            await HANDLERS[message_type](self, payload, request_id)
        except DomainError as exc:
            self.error(exc, request_id)
            context.update(event="refused", code=exc.code.value)
        except Exception:
            logger.exception("internal error", extra={**context, "event": "error"})
            self.error(DomainError(ErrorCode.INTERNAL_ERROR, "internal error"), request_id)
            return
        else:
            context["event"] = "handled"
        elapsed = time.perf_counter() - started
        if message_type == "VIRTUAL_TRADE":
            metrics.TRADE_SECONDS.observe(elapsed)
        if message_type != "HEARTBEAT":
            context["latencyMs"] = round(elapsed * 1000, 2)
            logger.info(message_type, extra=context)

    # --- handlers -----------------------------------------------------------------------------

    def _require_wallet(self, user_id: str | None = None) -> str:
        if self.wallet is None:
            raise DomainError(ErrorCode.UNAUTHORIZED, "sign in first")
        if user_id is not None and user_id != self.wallet:
            raise DomainError(ErrorCode.UNAUTHORIZED, "userId is not the signed-in wallet")
        return self.wallet

    def _require_joined(self, environment_id: str) -> str:
        wallet = self._require_wallet()
        if environment_id not in self.joined:
            raise DomainError(ErrorCode.UNAUTHORIZED, "join the environment first")
        return wallet

    async def on_heartbeat(self, data: protocol.HeartbeatData, request_id: str | None) -> None:
        now = int(time.time() * 1000)
        self.reply("HEARTBEAT", protocol.HeartbeatReply(timestamp=now), request_id)

    async def on_join(self, data: protocol.JoinEnvironmentData, request_id: str | None) -> None:
        wallet = self._require_wallet(data.userId)
        environment_id = data.environmentId
        rejoin = environment_id in self.joined
        try:
            environment_id_validator(environment_id)
        except ValidationError:
            # No environment has such an id, and it must not reach the hub: ids become
            # channel-layer group names, which the layer refuses (a non-ASCII id, say).
            raise DomainError(ErrorCode.ENVIRONMENT_NOT_FOUND, "environment not found") from None
        limit = settings.FUNPUMP_MAX_JOINED_ENVIRONMENTS
        admitted = rejoin or caps.JOINED.admit(
            self.owner, self.connection_id, environment_id, limit
        )
        if not admitted:
            raise protocol.invalid(
                "too many environments joined by this wallet", field="environmentId", limit=limit
            )
        # Register before reading the state, so no event committed in between is missed; the
        # hub holds events until it knows which ones the state already includes.
        await self.hub.join(
            environment_id,
            self.connection_id,
            self.push,
            react=self._state_reset,
            reacts_to=STATE_RESET_BY,
        )
        try:
            state = await db_call(participant_enter)(
                environment_id=environment_id, wallet=wallet, connection=self.connection_id
            )
        except BaseException:
            if not rejoin:
                caps.JOINED.release(self.owner, self.connection_id, environment_id)
                await self.hub.leave(environment_id, self.connection_id)
            raise
        self.joined.add(state.id)
        self.last_joined = state.id
        self.reply("ENVIRONMENT_STATE", state, request_id)
        self.hub.ready(environment_id, self.connection_id, state.sequence, state.participants)

    def _state_reset(self, event: Event) -> None:
        """A new round started (its ``ROUND_STARTED`` was just sent): send a fresh
        ``ENVIRONMENT_STATE``. The member's broadcasts are held until it is sent, and those the
        state includes are then skipped."""
        environment_id = event.environment_id
        self.hub.hold(environment_id, self.connection_id)
        task = asyncio.ensure_future(self._send_fresh_state(environment_id))
        _STATE_RESETS.add(task)  # kept until done: the loop holds tasks weakly
        task.add_done_callback(_STATE_RESETS.discard)

    async def _send_fresh_state(self, environment_id: str) -> None:
        try:
            if self.wallet is None or environment_id not in self.joined:
                return
            state = await db_call(participant_state)(
                environment_id=environment_id, wallet=self.wallet
            )
            self.reply("ENVIRONMENT_STATE", state, None)
            self.hub.ready(environment_id, self.connection_id, state.sequence, state.participants)
        except Exception:
            logger.exception("could not send %s a fresh state", self.connection_id)
        finally:
            self.hub.release(environment_id, self.connection_id)

    async def on_trade(self, data: protocol.VirtualTradeData, request_id: str | None) -> None:
        wallet = self._require_joined(data.environmentId)
        await self._publish(
            data.environmentId,
            "VIRTUAL_TRADE_EXECUTED",
            request_id,
            lambda: db_call(trade_execute)(
                environment_id=data.environmentId,
                wallet=wallet,
                amount=int(data.amount),
                is_buy=data.isBuy,
                min_amount_out=None if data.minAmountOut is None else int(data.minAmountOut),
                request_id=request_id,
                request_item=getattr(self, "batch_item", 0),
            ),
        )

    async def on_chat(self, data: protocol.ChatMessageData, request_id: str | None) -> None:
        wallet = self._require_joined(data.environmentId)
        await self._publish(
            data.environmentId,
            "CHAT_MESSAGE",
            request_id,
            lambda: db_call(chat_post)(
                environment_id=data.environmentId,
                wallet=wallet,
                message=data.message,
                request_id=request_id,
                request_item=getattr(self, "batch_item", 0),
            ),
        )

    async def on_quote(self, data: protocol.QuoteTradeData, request_id: str | None) -> None:
        quote = await db_call(trade_quote)(
            environment_id=data.environmentId, amount=int(data.amount), is_buy=data.isBuy
        )
        self.reply("TRADE_QUOTE", quote, request_id)

    async def _publish(
        self,
        environment_id: str,
        message_type: str,
        request_id: str | None,
        run: Callable[[], Awaitable[Published]],
    ) -> None:
        """Run a service that publishes an event of a joined environment, and answer with the
        sender's own copy of it in the public copy's place among the broadcasts.

        The hub keeps this connection's broadcasts back while the service runs: the event's
        sequence is known only once it returns.
        """
        self.hub.hold(environment_id, self.connection_id)
        try:
            result = await run()
        except Replay as replay:  # it ran before: its own copy again, to this client only
            self.hub.release(environment_id, self.connection_id)
            self.reply(message_type, replay.data, request_id)
            return
        except BaseException:
            self.hub.release(environment_id, self.connection_id)
            raise
        own = protocol.encode(message_type, result.own, request_id)
        self.hub.release(environment_id, self.connection_id, result.sequence, own)

    async def on_subscribe_price(
        self, data: protocol.SubscribePriceData, request_id: str | None
    ) -> None:
        key = (data.mintAddress, data.environmentId)
        limit = settings.FUNPUMP_MAX_SUBSCRIPTIONS
        if key not in self.price_feeds and not caps.SUBSCRIBED.allows(self.owner, key, limit):
            raise protocol.invalid(
                "too many price subscriptions by this wallet", field="mintAddress", limit=limit
            )
        if data.environmentId is None and settings.FUNPUMP_MARKET_FEED_URL:
            # A real mint's market price, once the feed has seen it trade; asking for it is
            # what makes the feed follow the mint.
            mint = data.mintAddress
            await db_call(market_interest_add)(mint=mint, connection=self.connection_id)
            market = await db_call(market_snapshot)(mint)
            if market is not None:
                self.reply("PRICE_UPDATE", market, request_id)
                await self._keep_price_feed(key, market_key(mint))
                await self.hub.subscribe_market(mint, self.connection_id, self.push, market)
                return
        environment_id = await db_call(price_target)(
            mint=data.mintAddress, environment_id=data.environmentId
        )
        snapshot = await db_call(price_update)(environment_id=environment_id)
        self.reply("PRICE_UPDATE", snapshot, request_id)
        await self._keep_price_feed(key, environment_id)
        await self.hub.subscribe_feed(
            environment_id,
            self.connection_id,
            self.push,
            lambda: db_call(price_update)(environment_id=environment_id),
            changed_by=PRICE_CHANGED_BY,
        )

    async def _keep_price_feed(self, key: tuple[str, str | None], feed: str) -> None:
        previous = self.price_feeds.get(key)
        if previous is not None and previous != feed:
            await self._drop_price_feed(key)
        self.price_feeds[key] = feed
        caps.SUBSCRIBED.hold(self.owner, self.connection_id, key)

    async def on_unsubscribe_price(
        self, data: protocol.UnsubscribePriceData, request_id: str | None
    ) -> None:
        key = (data.mintAddress, data.environmentId)
        await self._drop_price_feed(key)
        caps.SUBSCRIBED.release(self.owner, self.connection_id, key)

    async def _drop_price_feed(self, key: tuple[str, str | None]) -> None:
        feed = self.price_feeds.pop(key, None)
        if feed is not None and feed not in self.price_feeds.values():
            await self.hub.unsubscribe_feed(feed, self.connection_id)
        mint, environment_id = key
        if environment_id is None and settings.FUNPUMP_MARKET_FEED_URL:
            await db_call(market_interest_remove)(mint=mint, connection=self.connection_id)

    async def on_subscribe_rewards(
        self, data: protocol.SubscribeRewardsData, request_id: str | None
    ) -> None:
        wallet = self._require_wallet(data.userId)
        self.reply("REWARD_UPDATE", await db_call(reward_view)(wallet), request_id)
        self.rewards_subscribed = True
        await self.hub.subscribe_feed(
            rewards_key(wallet),
            self.connection_id,
            self.push,
            lambda: db_call(reward_view)(wallet),
            kind="REWARD_UPDATE",
        )

    async def on_claim_rewards(
        self, data: protocol.ClaimRewardsData, request_id: str | None
    ) -> None:
        wallet = self._require_wallet(data.userId)
        try:
            claimed = await db_call(claim_rewards)(
                wallet=wallet, request_id=request_id, request_item=getattr(self, "batch_item", 0)
            )
        except Replay as replay:
            self.reply("REWARD_UPDATE", replay.data, request_id)
            return
        self.reply("REWARD_UPDATE", claimed.answer, request_id)

    # --- graceful shutdown (kernel/lifecycle.py) ----------------------------------------------

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if lifecycle.draining():
            return  # not handled: after the 1012 close the client resends it elsewhere
        handling = getattr(self, "handling", None)
        if handling is None:  # closed during the handshake: never registered, nothing to drain
            await super().websocket_receive(message)
            return
        async with handling:
            await super().websocket_receive(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        # Channels' own would discard layer groups (there are none) and hop threads (see
        # dispatch).
        try:
            await self.disconnect(message["code"])
        finally:
            lifecycle.unregister(self)  # after the clean-up, which the drain waits for
        raise StopConsumer

    async def settle(self) -> None:
        """Finish the message being handled (the drain refuses the ones after it), and its
        answer: a committed trade's own copy may still wait behind an earlier event of another
        process, and the client must get it before the 1012 (the drain's deadline bounds this)."""
        async with self.handling:
            pass
        # A short poll, once per connection during a drain: cheaper than an event per member.
        while self.hub.owes(self.connection_id):  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    async def close_for_restart(self, wait: float) -> None:
        """Close with 1012 once the outbox is written (at most ``wait`` seconds from now); frames
        written at once (see push) are in the socket's buffer already, ahead of the close."""
        writer = self.writer
        for _ in range(int(wait / 0.01)):  # a short poll: the writer task owns the queue
            if writer is None or writer.done() or self.outbox.empty():
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # let the writer hand its last frame to the socket
        await self.close(code=lifecycle.CLOSE_RESTART)


HANDLERS: dict[str, Handler] = {
    "HEARTBEAT": RoomConsumer.on_heartbeat,
    "JOIN_ENVIRONMENT": RoomConsumer.on_join,
    "VIRTUAL_TRADE": RoomConsumer.on_trade,
    "QUOTE_TRADE": RoomConsumer.on_quote,
    "CHAT_MESSAGE": RoomConsumer.on_chat,
    "SUBSCRIBE_PRICE": RoomConsumer.on_subscribe_price,
    "UNSUBSCRIBE_PRICE": RoomConsumer.on_unsubscribe_price,
    "SUBSCRIBE_REWARDS": RoomConsumer.on_subscribe_rewards,
    "CLAIM_REWARDS": RoomConsumer.on_claim_rewards,
    "VOICE_SESSION_START": RoomConsumer.on_voice_start,
    "VOICE_AUDIO_END": RoomConsumer.on_voice_audio_end,
    "VOICE_SESSION_END": RoomConsumer.on_voice_session_end,
}
