"""An asyncio client for FunPump's ``/ws`` protocol.

It keeps the original client's behaviour: a handler per message type, a heartbeat every 30 s,
up to 5 reconnection attempts 3 s apart (re-joining the environments it had joined), and
optional 100 ms batching of outgoing messages of one type. :meth:`FunPumpClient.request` sends
a message with a fresh ``requestId`` and waits for the server's direct answer to it.

When a server restarts it closes with 1012 (or 1001): the client reconnects at once, after a
short random pause so a whole room does not arrive together, and behind a proxy lands on
another server process. A request still waiting when its connection closes raises
:class:`ConnectionError`; after a 1012 such a request did not run and may be sent again.

Signing in takes an ed25519 key: :func:`sign_in` asks for a challenge, signs it and returns the
token that the socket accepts as ``Authorization: Bearer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import random
import secrets
import urllib.request
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import base58
import websockets
from nacl.signing import SigningKey
from websockets.asyncio.client import ClientConnection
from websockets.typing import Origin

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[None] | None]

# Close codes of a server going away on purpose (restart, shutdown): come back soon, elsewhere.
RESTART_CODES = frozenset({1001, 1012})
RESTART_JITTER = 1.0  # seconds: the first reconnection after a restart waits up to this


def wallet_of(key: SigningKey) -> str:
    """The base58 public key (the ``userId``) of a signing key."""
    return base58.b58encode(bytes(key.verify_key)).decode()


def _post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 (the caller chooses an http(s) URL)
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        result: dict[str, Any] = json.loads(response.read())
        return result


async def sign_in(base_url: str, key: SigningKey) -> str:
    """Sign in at ``base_url`` (``http://host:port``) with ``key``; return a bearer token."""
    wallet = wallet_of(key)
    challenge = await asyncio.to_thread(
        _post_json, f"{base_url}/api/auth/challenge", {"wallet": wallet}
    )
    signature = key.sign(challenge["message"].encode()).signature
    verified = await asyncio.to_thread(
        _post_json,
        f"{base_url}/api/auth/verify",
        {
            "wallet": wallet,
            "nonce": challenge["nonce"],
            "signature": base58.b58encode(signature).decode(),
        },
    )
    return str(verified["token"])


class FunPumpClient:
    """One connection to ``/ws`` with handlers, heartbeats, reconnection and batching."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        origin: str | None = None,
        reconnect_attempts: int = 5,
        reconnect_delay: float = 3.0,
        heartbeat_interval: float = 30.0,
        batch_window: float | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.origin = origin
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay = reconnect_delay
        self.heartbeat_interval = heartbeat_interval
        self.batch_window = batch_window
        self.handlers: dict[str, list[Handler]] = defaultdict(list)
        self.joined: dict[str, str] = {}  # environmentId -> userId, re-joined after reconnecting
        self._socket: ClientConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._batches: dict[str, list[Any]] = {}
        self._batch_flush: asyncio.TimerHandle | None = None
        self._ids = itertools.count(1)
        self._id_prefix = f"r{secrets.token_hex(6)}."
        self._closing = False
        self.close_code: int | None = None  # of the last connection that closed

    # --- lifecycle ----------------------------------------------------------------------------

    async def connect(self) -> None:
        self._socket = await self._open()
        self._closing = False
        self._tasks = [
            asyncio.create_task(self._read()),
            asyncio.create_task(self._heartbeat()),
        ]

    async def _open(self) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        return await websockets.connect(
            self.url,
            additional_headers=headers,
            origin=Origin(self.origin) if self.origin else None,
            max_size=2**20,
        )

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._socket is not None:
            await self._socket.close()
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.cancel()

    async def __aenter__(self) -> FunPumpClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- handlers -----------------------------------------------------------------------------

    def on(self, message_type: str, handler: Handler) -> None:
        """Call ``handler(message)`` for every message of ``message_type`` ("*" for all)."""
        self.handlers[message_type].append(handler)

    # --- sending ------------------------------------------------------------------------------

    async def send(
        self, message_type: str, data: Any = None, request_id: str | None = None
    ) -> None:
        """Send one message; with batching on, messages without a request id wait up to the
        batch window and leave together as one frame whose ``data`` is an array."""
        if self.batch_window is not None and request_id is None:
            self._batches.setdefault(message_type, []).append(data)
            if self._batch_flush is None:
                loop = asyncio.get_running_loop()
                self._batch_flush = loop.call_later(
                    self.batch_window, lambda: asyncio.ensure_future(self.flush())
                )
            return
        await self._send_frame(message_type, data, request_id)

    async def flush(self) -> None:
        """Send what the batch window holds now."""
        self._batch_flush = None
        batches, self._batches = self._batches, {}
        for message_type, items in batches.items():
            data = items[0] if len(items) == 1 else items
            await self._send_frame(message_type, data, None)

    async def request(
        self, message_type: str, data: Any = None, *, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send with a fresh ``requestId``; return the reply or ``ERROR`` carrying it."""
        # Unique across clients and restarts: a trade, chat or claim runs once per requestId.
        request_id = f"{self._id_prefix}{next(self._ids)}"
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = waiter
        try:
            await self._send_frame(message_type, data, request_id)
            return await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiters.pop(request_id, None)

    async def join(self, environment_id: str, user_id: str) -> dict[str, Any]:
        reply = await self.request(
            "JOIN_ENVIRONMENT", {"environmentId": environment_id, "userId": user_id}
        )
        if reply["type"] == "ENVIRONMENT_STATE":
            self.joined[environment_id] = user_id
        return reply

    async def send_audio(self, pcm: bytes, frame_bytes: int = 3200) -> None:
        """Send voice audio (16 kHz mono PCM16) as binary frames, 100 ms each by default."""
        if self._socket is None:
            raise ConnectionError("not connected")
        for start in range(0, len(pcm), frame_bytes):
            await self._socket.send(pcm[start : start + frame_bytes])

    async def _send_frame(self, message_type: str, data: Any, request_id: str | None) -> None:
        if self._socket is None:
            raise ConnectionError("not connected")
        frame: dict[str, Any] = {"type": message_type}
        if data is not None:
            frame["data"] = data
        if request_id is not None:
            frame["requestId"] = request_id
        await self._socket.send(json.dumps(frame))

    # --- receiving ----------------------------------------------------------------------------

    async def _read(self) -> None:
        while True:
            socket = self._socket
            assert socket is not None
            try:
                async for raw in socket:
                    if isinstance(raw, str):
                        await self._dispatch(json.loads(raw))
            except websockets.ConnectionClosed:
                pass
            self.close_code = socket.close_code
            for waiter in self._waiters.values():
                if not waiter.done():
                    waiter.set_exception(
                        ConnectionError(f"connection closed ({self.close_code}) before the answer")
                    )
            if self._closing or not await self._reconnect():
                return

    async def _dispatch(self, message: dict[str, Any]) -> None:
        request_id = message.get("requestId")
        if request_id is not None:
            waiter = self._waiters.get(request_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
        for handler in self.handlers.get(message.get("type", ""), []) + self.handlers.get("*", []):
            # A failing handler is the application's bug: logged, it must not stop the reading
            # (every later reply and broadcast would be lost, and requests time out).
            try:
                result = handler(message)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("handler of %s failed", message.get("type"))

    async def _reconnect(self) -> bool:
        for attempt in range(1, self.reconnect_attempts + 1):
            delay = self.reconnect_delay
            if attempt == 1 and self.close_code in RESTART_CODES:
                delay = random.uniform(0, min(RESTART_JITTER, self.reconnect_delay))  # noqa: S311
            await asyncio.sleep(delay)
            try:
                self._socket = await self._open()
            except (OSError, websockets.WebSocketException):
                logger.info("reconnect attempt %s failed", attempt)
                continue
            for environment_id, user_id in self.joined.items():
                await self._send_frame(
                    "JOIN_ENVIRONMENT", {"environmentId": environment_id, "userId": user_id}, None
                )
            return True
        logger.warning("gave up reconnecting after %s attempts", self.reconnect_attempts)
        return False

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            with contextlib.suppress(ConnectionError, websockets.ConnectionClosed):
                await self._send_frame("HEARTBEAT", None, None)
