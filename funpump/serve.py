"""Start daphne with FunPump's WebSocket frame limit: ``python -m funpump.serve [daphne options]``.

daphne's WebSocket layer (autobahn) enforces the frame size while reading the frame header, so
an oversized frame is never buffered. By default it then drops the TCP connection, and daphne
refuses close code 1009 from an application; this launcher sets the limit to
``FUNPUMP_MAX_MESSAGE_BYTES`` and has autobahn close such a connection properly with 1009
(Message Too Big). Every other option is daphne's own.

It also shuts down gracefully: on SIGTERM or SIGINT, before daphne cancels the connections, it
drains them (``kernel.lifecycle``): readiness turns false, new WebSocket handshakes are refused
with HTTP 503, the messages in flight are finished and their broadcasts sent, and every socket is
closed with 1012 (Service Restart), all within ``FUNPUMP_DRAIN_SECONDS``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import pprint
import sys
from functools import partial
from typing import Any

from autobahn.websocket import protocol as autobahn_protocol
from autobahn.websocket.types import ConnectionDeny
from daphne import server as daphne_server
from daphne.cli import CommandLineInterface
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet import defer, tcp
from twisted.internet.interfaces import ISSLTransport
from twisted.python.failure import Failure

from voice import readiness as voice_readiness

APPLICATION = "funpump.asgi:application"
SLOW_READER_CLOSE = 4009
# RFC 6455 codes a server may send that autobahn's sendClose refuses from an application:
# 1001 Going Away, 1011 Internal Error and 1012 Service Restart.
SERVER_CLOSE_CODES = frozenset({1001, 1011, 1012})
# The scope extension through which the gateway writes text frames without an ASGI message
# (gateway.consumers reads it under the same name).
WRITE_TEXT = "funpump.write_text"
# The collector's generation thresholds once the startup heap is frozen (see freeze_startup_heap).
GC_THRESHOLDS = (10_000, 10, 10)

logger = logging.getLogger(__name__)

# The last text framed by write_text and its frame: a broadcast hands every member the same
# string, so it is encoded and framed once, not once per member.
_last_frame: tuple[str, Any] | None = None


class _FormattedIfLogged:
    """``pprint.pformat`` of a value, done only when a log line shows it.

    autobahn pretty-prints every new connection's 30-odd settings for a debug line whether debug
    logging is on or not: a tenth of a connection's handshake. It gets this instead.
    """

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)


autobahn_protocol.pformat = _FormattedIfLogged  # type: ignore[attr-defined,assignment]
# The module's one other user of pformat must still return a string.
autobahn_protocol.Timings.__str__ = lambda self: pprint.pformat(self._timings)  # type: ignore[method-assign]


class BoundedWebSocketProtocol(WebSocketProtocol):  # type: ignore[misc]
    """Bounds the memory one client can make the server hold, in both directions.

    Outbound: once the kernel's socket buffer is full, Twisted keeps what is written in memory;
    past ``FUNPUMP_MAX_BUFFERED_BYTES`` of that, the client is dropped (close code 4009).

    Inbound: daphne puts every frame in the application's queue as soon as it is read, however
    far behind the application is. Each frame is charged to the connection's
    :class:`kernel.caps.InboundBudget`; over the byte rate, or with too many frames or bytes
    waiting, the socket is not read until it is back under, so a fast sender is slowed by TCP
    rather than buffered here.
    """

    inbound: Any = None
    inbound_resume: Any = None
    inbound_paused = False

    def dataReceived(self, data: bytes) -> None:
        # autobahn's own formats a debug line for every read, highlighting included, whether
        # debug logging is on or not: a tenth of a heartbeat's cost.
        self._dataReceived(data)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        super().onMessage(payload, isBinary)
        if self.muted or getattr(self, "application_queue", None) is None:
            return
        if self.inbound is None:
            from kernel.caps import InboundBudget

            self.inbound = InboundBudget.from_settings()
        self.inbound.arrived(len(payload))
        self._throttle_inbound()

    def _throttle_inbound(self) -> None:
        transport = self.transport
        if transport is None:
            return
        wait = self.inbound.wait(self.application_queue.qsize())
        if wait > 0:
            if not self.inbound_paused:
                self.inbound_paused = True
                transport.pauseProducing()
                if not getattr(self, "inbound_logged", False):
                    self.inbound_logged = True  # once per connection: it may go on for long
                    logger.info("slowing down a fast sender %s", self.client_addr)
            if self.inbound_resume is None:
                from twisted.internet import reactor

                self.inbound_resume = reactor.callLater(wait, self._inbound_check)
        elif self.inbound_paused:
            self.inbound_paused = False
            transport.resumeProducing()

    def _inbound_check(self) -> None:
        self.inbound_resume = None
        self._throttle_inbound()

    def handle_reply(self, message: dict[str, Any]) -> None:
        # daphne drops a close's reason; a client refused for a cap should read why.
        reason = message.get("reason")
        code = message.get("code")
        if (
            message.get("type") == "websocket.close"
            and reason
            and isinstance(code, int)
            and 3000 <= code <= 4999
            and self.state == self.STATE_OPEN
        ):
            self.sendClose(code=code, reason=str(reason)[:120])
            return
        super().handle_reply(message)

    def connectionLost(self, reason: Any) -> None:
        if self.inbound_resume is not None and self.inbound_resume.active():
            self.inbound_resume.cancel()
        self.inbound_resume = None
        super().connectionLost(reason)

    def write_text(self, text: str) -> None:
        """Send a text frame now, from the event loop: the gateway's path for every frame it
        sends, where an ASGI ``websocket.send`` would take a queue, a task and daphne's checks
        of the message to get here. Once the socket is closing, frames are dropped (as daphne
        drops the messages of a closed connection)."""
        if self.state != self.STATE_OPEN:
            return
        global _last_frame
        last = _last_frame
        if last is not None and last[0] is text:  # the same broadcast to the next member
            frame = last[1]
        else:
            try:
                payload = text.encode()
            except UnicodeEncodeError:  # a lone surrogate: logged and closed, as the outbox does
                logger.exception(
                    "a frame for %s is not UTF-8; closing the socket", self.client_addr
                )
                self.sendCloseFrame(code=1011, isReply=False)
                return
            frame = self.factory.prepareMessage(payload, False)
            _last_frame = (text, frame)
        # The frame as framed once for every member (written as is unless this client
        # negotiated compression).
        self.sendPreparedMessage(frame)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # Twisted buffers every write and has the event loop watch the socket until it is
        # written: two epoll_ctl calls and a callback per frame, about a fifth of a broadcast's
        # cost. When nothing is waiting to go out, the frame is written to the socket at once
        # and only what the kernel does not take is left to Twisted. (autobahn's traffic
        # statistics, which nothing here reads, do not count these bytes.)
        transport = self.transport
        if (
            sync
            or chopsize
            or self.send_queue
            or not isinstance(transport, tcp.Connection)
            or not transport.connected
            or transport.disconnecting
            or transport.offset < len(transport.dataBuffer)
            or transport._tempDataLen
        ):
            super().sendData(data, sync, chopsize)
            return
        sent = transport.writeSomeData(data)
        if not isinstance(sent, int):  # the connection is lost: Twisted's own write sees to it
            sent = 0
        if sent < len(data):
            transport.write(data[sent:])  # type: ignore[no-untyped-call]

    def sendMessage(self, *args: Any, **kwargs: Any) -> None:
        super().sendMessage(*args, **kwargs)
        self._drop_if_not_reading()

    def sendPreparedMessage(self, preparedMsg: Any) -> None:
        super().sendPreparedMessage(preparedMsg)
        self._drop_if_not_reading()

    def _drop_if_not_reading(self) -> None:
        """Drop the client (4009) once more than FUNPUMP_MAX_BUFFERED_BYTES wait for it (once:
        a prepared frame to a compressing client passes here twice, through sendMessage)."""
        transport = self.transport
        if transport is None or self.state != self.STATE_OPEN:
            return
        buffered = len(getattr(transport, "dataBuffer", b"")) + getattr(
            transport, "_tempDataLen", 0
        )
        from django.conf import settings

        if buffered > settings.FUNPUMP_MAX_BUFFERED_BYTES:
            self.sendClose(code=SLOW_READER_CLOSE, reason="client too slow to read")
            transport.abortConnection()

    # --- graceful shutdown ----------------------------------------------------------------------

    def onConnect(self, request: Any) -> Any:
        from kernel import lifecycle

        if lifecycle.draining():
            # Before daphne registers the connection: a proxy retries another process on 503.
            self.refused_while_draining = True
            raise ConnectionDeny(  # type: ignore[no-untyped-call]
                ConnectionDeny.SERVICE_UNAVAILABLE, "server restarting"
            )
        return super().onConnect(request)

    def onOpen(self) -> None:
        super().onOpen()
        # The handshake's request and response, kept by autobahn for the socket's whole life
        # though nothing reads them once it is open (2 KB of an idle socket).
        self.http_headers = self.http_request_data = self.http_response_data = None

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if getattr(self, "refused_while_draining", False):
            return  # daphne never knew this connection
        super().onClose(wasClean, code, reason)

    def serverClose(self, code: int | None = None) -> None:
        if code in SERVER_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
            return
        super().serverClose(code=code)


class LimitedWebSocketFactory(WebSocketFactory):  # type: ignore[misc]
    """daphne's factory with the contract's frame limit and a proper 1009 close."""

    protocol = BoundedWebSocketProtocol

    def setProtocolOptions(self, **options: Any) -> None:
        from django.conf import settings

        limit = settings.FUNPUMP_MAX_MESSAGE_BYTES
        options.update(maxMessagePayloadSize=limit, maxFramePayloadSize=limit, failByDrop=False)
        super().setProtocolOptions(**options)
        # autobahn copies its 30-odd settings from the factory into every connection's own
        # attributes unless the protocol already has them: as class attributes they are held
        # once, not once per socket (1.6 KB of an idle socket's dictionary).
        for name in self.protocol.CONFIG_ATTRS:
            value = getattr(self, name)
            # A function (perMessageCompressionAccept) must not become a method of the class.
            setattr(self.protocol, name, staticmethod(value) if callable(value) else value)


def freeze_startup_heap() -> None:
    """Keep the garbage collector off the objects that live as long as the process.

    Django, the models, pydantic's validators, Twisted and the speech code are some 145,000
    objects that every full collection walked, for about 230 ms with the event loop stopped:
    with a thousand sockets joined, such pauses were the p99 of a broadcast. Frozen, they are
    left out of every collection.

    The youngest generation is collected every 10,000 allocations rather than 700: a broadcast
    to a thousand members then runs no collection at all, where the default ran several, and
    the older ones (whose walks take the time) follow from it. The older generations keep
    Python's ratios, so full collections still come once the long-lived heap has grown by a
    quarter: a closed socket leaves reference cycles among daphne's and Twisted's objects
    (some 75 objects each) that only they reclaim, and far rarer ones would let those pile up.
    """
    gc.collect()  # what the imports left as garbage is collected, not frozen
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Inbox:
    """A socket's messages for the application, in order (daphne's ``application_queue``).

    daphne gives each socket an ``asyncio.Queue``: three deques and an event, some 3 KB that an
    idle socket holds for its whole life. The application is its only reader; this is a list,
    and a future only while the application waits.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, message: dict[str, Any]) -> None:
        self._items.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> dict[str, Any]:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def qsize(self) -> int:
        return len(self._items)


class GracefulServer(daphne_server.Server):  # type: ignore[misc]
    """daphne's server, draining the connections before it cancels them at shutdown."""

    def run(self) -> None:
        # The application is loaded by now (daphne's command line imports it first).
        freeze_startup_heap()
        super().run()

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        # daphne leaves a WebSocket scope's "scheme" out (ASGI's default: "ws"); the Origin check
        # compares it with the page's, so a socket over daphne's own TLS must say "wss". The
        # gateway writes its frames through WRITE_TEXT.
        if scope.get("type") != "websocket":
            return super().create_application(protocol, scope)
        if ISSLTransport.providedBy(protocol.transport):
            scope["scheme"] = "wss"
        scope.setdefault("extensions", {})[WRITE_TEXT] = protocol.write_text
        # daphne's own, with an Inbox for its asyncio.Queue.
        assert "application_instance" not in self.connections[protocol]
        inbox = Inbox()
        scope.setdefault("asgi", {"version": "3.0"})
        instance = self.application(
            scope=scope, receive=inbox.get, send=partial(self.handle_reply, protocol)
        )
        if protocol not in self.connections:
            instance.close()
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(instance)
        return inbox

    def kill_all_applications(self) -> defer.Deferred[Any]:
        from django.conf import settings

        from kernel import lifecycle

        drained: defer.Deferred[Any] = defer.Deferred.fromFuture(
            asyncio.ensure_future(lifecycle.drain(settings.FUNPUMP_DRAIN_SECONDS))
        )

        def failed(failure: Failure) -> None:
            logger.error("drain failed", exc_info=failure.value)

        drained.addErrback(failed)
        # Twisted waits for this Deferred before it closes the listening ports and stops.
        drained.addCallback(lambda _: super(GracefulServer, self).kill_all_applications())
        return drained


class GracefulCommandLine(CommandLineInterface):  # type: ignore[misc]
    server_class = GracefulServer


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "funpump.settings")
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(arg.endswith(":application") for arg in args):
        args.append(APPLICATION)
    daphne_server.WebSocketFactory = LimitedWebSocketFactory
    voice_readiness.preload()  # the speech model, in the background: see voice/readiness.py
    GracefulCommandLine().run(args)


def leave() -> None:
    """Exit at once after a clean stop: the drain is done and all state is in PostgreSQL and
    Redis, while Python's own teardown would spend seconds collecting the speech models'
    objects and hold up a rolling restart for nothing."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
    leave()
