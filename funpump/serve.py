"""Start daphne with FunPump's WebSocket frame limit: ``python -m funpump.serve [daphne options]``.

daphne's WebSocket layer (autobahn) enforces the frame size while reading the frame header, so
an oversized frame is never buffered. By default it then drops the TCP connection, and daphne
refuses close code 1009 from an application; this launcher sets the limit to
``FUNPUMP_MAX_MESSAGE_BYTES`` and has autobahn close such a connection properly with 1009
(Message Too Big). Every other option is daphne's own.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from daphne import server as daphne_server
from daphne.cli import CommandLineInterface
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

APPLICATION = "funpump.asgi:application"
SLOW_READER_CLOSE = 4009


class BoundedWebSocketProtocol(WebSocketProtocol):  # type: ignore[misc]
    """Disconnects a client that stops reading instead of buffering its frames forever.

    Once the kernel's socket buffer is full, Twisted keeps what is written in memory; past
    ``FUNPUMP_MAX_BUFFERED_BYTES`` of that, the client is dropped (close code 4009).
    """

    def sendMessage(self, *args: Any, **kwargs: Any) -> None:
        super().sendMessage(*args, **kwargs)
        transport = self.transport
        if transport is None:
            return
        buffered = len(getattr(transport, "dataBuffer", b"")) + getattr(
            transport, "_tempDataLen", 0
        )
        from django.conf import settings

        if buffered > settings.FUNPUMP_MAX_BUFFERED_BYTES:
            self.sendClose(code=SLOW_READER_CLOSE, reason="client too slow to read")
            transport.abortConnection()


class LimitedWebSocketFactory(WebSocketFactory):  # type: ignore[misc]
    """daphne's factory with the contract's frame limit and a proper 1009 close."""

    protocol = BoundedWebSocketProtocol

    def setProtocolOptions(self, **options: Any) -> None:
        from django.conf import settings

        limit = settings.FUNPUMP_MAX_MESSAGE_BYTES
        options.update(maxMessagePayloadSize=limit, maxFramePayloadSize=limit, failByDrop=False)
        super().setProtocolOptions(**options)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "funpump.settings")
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(arg.endswith(":application") for arg in args):
        args.append(APPLICATION)
    daphne_server.WebSocketFactory = LimitedWebSocketFactory
    CommandLineInterface().run(args)


if __name__ == "__main__":
    main()
