"""The WebSocket's ASGI middleware: Channels' session and auth stack, without needless reads."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddleware
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser


class SessionUserMiddleware(AuthMiddleware):  # type: ignore[misc]
    """Channels' ``AuthMiddleware``, which reads the session's user on a worker thread for every
    socket, minus that read where no session can sign anyone in: a socket that brings a bearer
    token (the token names its wallet) or no session cookie is anonymous at once."""

    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        bearer = any(name == b"authorization" for name, _ in scope.get("headers", ()))
        if bearer or settings.SESSION_COOKIE_NAME not in scope.get("cookies", {}):
            scope["user"]._wrapped = AnonymousUser()
            return
        await super().resolve_scope(scope)


def session_auth_stack(inner: Any) -> Any:
    """``channels.auth.AuthMiddlewareStack`` with :class:`SessionUserMiddleware`."""
    return CookieMiddleware(SessionMiddleware(SessionUserMiddleware(inner)))
