"""Per-IP throttling of the sign-in endpoints (``FUNPUMP_AUTH_RATE_LIMIT``, "count/seconds")."""

from __future__ import annotations

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from kernel.ratelimit import parse_limit


class AuthRateThrottle(SimpleRateThrottle):
    scope = "auth"

    def get_rate(self) -> str:
        return str(settings.FUNPUMP_AUTH_RATE_LIMIT)

    def parse_rate(self, rate: str | None) -> tuple[int | None, int | None]:
        if rate is None:
            return None, None
        return parse_limit(rate)

    def get_cache_key(self, request: Request, view: APIView) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
