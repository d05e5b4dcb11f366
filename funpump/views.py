"""HTTP endpoints of the project itself: wallet sign-in, health, the protocol schema, the page."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import login
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from funpump import protocol
from funpump.auth import (
    AuthFailed,
    challenge_create,
    challenge_verify,
    token_issue,
    wallet_is_valid,
    wallet_user,
)
from funpump.errors import DomainError, ErrorCode
from funpump.throttling import AuthRateThrottle
from trading.selectors import millis

logger = logging.getLogger(__name__)

DOMAIN_STATUS = {
    ErrorCode.INVALID_MESSAGE: status.HTTP_400_BAD_REQUEST,
    ErrorCode.UNAUTHORIZED: status.HTTP_401_UNAUTHORIZED,
    ErrorCode.ENVIRONMENT_NOT_FOUND: status.HTTP_404_NOT_FOUND,
    ErrorCode.RATE_LIMITED: status.HTTP_429_TOO_MANY_REQUESTS,
}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Errors as ``{code, message, details?}``, the same words as the socket's ``ERROR``."""
    if isinstance(exc, DomainError):
        body: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.details:
            body["details"] = exc.details
        return Response(body, status=DOMAIN_STATUS.get(exc.code, status.HTTP_400_BAD_REQUEST))
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        code = ErrorCode.INVALID_MESSAGE
        response.data = {"code": code, "message": "invalid request", "details": exc.detail}
    elif isinstance(exc, exceptions.Throttled):
        response.data = {
            "code": ErrorCode.RATE_LIMITED,
            "message": "too many requests",
            "details": {"retryAfterMs": int((getattr(exc, "wait", 0) or 0) * 1000)},
        }
    elif isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        response.data = {"code": ErrorCode.UNAUTHORIZED, "message": str(exc.detail)}
    return response


class WalletField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_length=32, max_length=44, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if not wallet_is_valid(value):
            raise serializers.ValidationError("must be a base58 Solana public key")
        return value


class ChallengeRequest(serializers.Serializer[Any]):
    wallet = WalletField()


class VerifyRequest(serializers.Serializer[Any]):
    wallet = WalletField()
    nonce = serializers.CharField(max_length=64)
    signature = serializers.CharField(max_length=100)


class ChallengeView(APIView):
    """Step 1 of sign-in: a message with a fresh nonce for the wallet to sign."""

    authentication_classes: list[Any] = []
    throttle_classes = [AuthRateThrottle]

    @extend_schema(
        request=ChallengeRequest,
        responses=inline_serializer(
            "Challenge",
            {
                "message": serializers.CharField(),
                "nonce": serializers.CharField(),
                "expiresAt": serializers.IntegerField(),
            },
        ),
    )
    def post(self, request: Request) -> Response:
        body = ChallengeRequest(data=request.data)
        body.is_valid(raise_exception=True)
        challenge = challenge_create(wallet=body.validated_data["wallet"], host=request.get_host())
        return Response(
            {
                "message": challenge.message,
                "nonce": challenge.nonce,
                "expiresAt": millis(challenge.expires_at),
            }
        )


class VerifyView(APIView):
    """Step 2 of sign-in: the signed message buys a token and a session."""

    authentication_classes: list[Any] = []
    throttle_classes = [AuthRateThrottle]

    @extend_schema(
        request=VerifyRequest,
        responses=inline_serializer(
            "Token", {"token": serializers.CharField(), "expiresAt": serializers.IntegerField()}
        ),
    )
    def post(self, request: Request) -> Response:
        body = VerifyRequest(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            wallet = challenge_verify(**body.validated_data)
        except AuthFailed as exc:
            return Response(
                {"code": ErrorCode.UNAUTHORIZED, "message": str(exc)},
                status=status.HTTP_401_UNAUTHORIZED,
            )
        login(request._request, wallet_user(wallet))  # type: ignore[arg-type]
        issued = token_issue(wallet)
        return Response({"token": issued.token, "expiresAt": issued.expires_at_ms})


class HealthView(APIView):
    """200 when the database and the channel layer answer, else 503."""

    authentication_classes: list[Any] = []

    @extend_schema(responses={200: dict[str, str], 503: dict[str, str]})
    def get(self, request: Request) -> Response:
        checks = {"database": "ok", "channelLayer": "ok"}
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception:
            logger.exception("health: database check failed")
            checks["database"] = "unavailable"
        try:
            layer = get_channel_layer()
            assert layer is not None
            channel = async_to_sync(layer.new_channel)()
            async_to_sync(layer.send)(channel, {"type": "health.ping"})
            async_to_sync(layer.receive)(channel)
        except Exception:
            logger.exception("health: channel layer check failed")
            checks["channelLayer"] = "unavailable"
        healthy = all(value == "ok" for value in checks.values())
        return Response(
            {"status": "ok" if healthy else "unavailable", **checks},
            status=status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE,
        )


def protocol_schema(request: HttpRequest) -> JsonResponse:
    """The JSON Schema of every WebSocket message, generated from ``funpump.protocol``."""
    return JsonResponse(protocol.json_schema())


def room(request: HttpRequest) -> HttpResponse:
    """The trading-room page."""
    return render(request, "room.html")
