"""The WebSocket's ASGI entry: the route and the user, in one step before the consumer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import Any

from channels.auth import get_user
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class WebSocketEntry:
    """Route a socket by its path and give the consumer ``scope["user"]``.

    It does what Channels' ``AuthMiddlewareStack(URLRouter(...))`` did for the gateway, which
    kept five copies of the scope and nine suspended coroutines alive for each socket's whole
    life (a sixth of an idle socket's memory) and read the session on a worker thread for every
    socket. The gateway needs the session only for a cookie sign-in: a socket with a bearer
    token (the token names the wallet) or without the session cookie is anonymous at once;
    otherwise the session's user is read as Channels' ``AuthMiddleware`` reads it.
    """

    def __init__(self, routes: dict[str, ASGIApp]) -> None:
        self.routes = routes  # path without its leading "/" → the consumer's application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        application = self.routes.get(path.removeprefix("/"))
        if application is None:  # refused during the handshake: HTTP 403
            await receive()  # websocket.connect
            await send({"type": "websocket.close"})
            return
        await application({**scope, "user": await session_user(scope)}, receive, send)


async def session_user(scope: dict[str, Any]) -> Any:
    """The Django user of the socket's session cookie; anonymous with a bearer token, without
    the cookie, or for a session that signs nobody in."""
    cookie = None
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return AnonymousUser()
        if name == b"cookie":
            cookie = value
    if cookie is None:
        return AnonymousUser()
    session_key = parse_cookie(cookie.decode("latin-1")).get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        return AnonymousUser()
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return await get_user({"session": session})
