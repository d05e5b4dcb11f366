"""DRF authentication by ``Authorization: Bearer <token>`` (a wallet sign-in token)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from wallets.services import token_wallet, wallet_user


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, str] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme != self.keyword:
            return None
        wallet = token_wallet(token.strip())
        if wallet is None:
            raise exceptions.AuthenticationFailed("invalid or expired token")
        return wallet_user(wallet), token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class BearerTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """Documents the wallet token in the OpenAPI schema."""

    target_class = "wallets.authentication.BearerTokenAuthentication"
    name = "walletToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "Token from POST /api/auth/verify (wallet sign-in).",
        }
