"""Wallet sign-in over HTTP: a challenge to sign, then a token and a session."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import login
from django.http import HttpRequest
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from kernel.clock import millis
from protocol.errors import ErrorCode
from wallets.services import (
    AuthFailed,
    challenge_create,
    challenge_verify,
    token_issue,
    wallet_is_valid,
    wallet_user,
)
from wallets.throttling import AuthRateThrottle


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


def client_ip(request: HttpRequest) -> str | None:
    """The client's address as the sign-in throttle sees it (``DJANGO_NUM_PROXIES`` aware).

    django-axes keys admin lockouts by it (``AXES_CLIENT_IP_CALLABLE``).
    """
    return BaseThrottle().get_ident(request)  # type: ignore[arg-type]


class ChallengeView(APIView):
    """Step 1 of sign-in: a message with a fresh nonce for the wallet to sign."""

    authentication_classes: list[Any] = []
    # JSON only: a cross-site HTML form can post url-encoded or text/plain bodies without the
    # page's consent, never application/json (that needs a CORS preflight), so sign-in cannot
    # be forged from another site (login CSRF).
    parser_classes = [JSONParser]
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
    parser_classes = [JSONParser]  # login CSRF: see ChallengeView
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
        # The signature authenticated the wallet, not a backend: name the model backend that
        # loads the session's user (django-axes' backend only watches password logins).
        login(
            request._request,
            wallet_user(wallet),  # type: ignore[arg-type]
            backend="django.contrib.auth.backends.ModelBackend",
        )
        issued = token_issue(wallet)
        return Response({"token": issued.token, "expiresAt": issued.expires_at_ms})
