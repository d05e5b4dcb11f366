"""Wallet sign-in: a server-issued nonce, an ed25519 signature over it, an expiring token.

Tokens are Django-signed (HMAC with ``SECRET_KEY``) and carry their issue time, so nothing
secret is stored; nonces are stored, expire after five minutes and work once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

import base58
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.db import transaction
from django.utils import timezone
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from kernel.clock import millis
from protocol.addresses import is_public_key
from wallets.models import AuthChallenge

# A namespace, not a secret; unchanged since sign-in moved here, so issued tokens stay valid.
TOKEN_SALT = "funpump.auth.token"  # noqa: S105


class AuthFailed(Exception):
    """The signature, nonce or wallet did not check out."""


def wallet_is_valid(wallet: object) -> bool:
    return is_public_key(wallet)


def challenge_create(*, wallet: str, host: str) -> AuthChallenge:
    """Issue a nonce for ``wallet`` and the message it must sign."""
    nonce = secrets.token_urlsafe(24)
    now = timezone.now()
    expires_at = now + timedelta(seconds=settings.FUNPUMP_CHALLENGE_TTL)
    message = (
        f"{host} wants you to sign in to FunPump with your Solana account:\n"
        f"{wallet}\n\n"
        f"Nonce: {nonce}\n"
        f"Issued At: {now.isoformat()}\n"
        f"Expiration Time: {expires_at.isoformat()}"
    )
    AuthChallenge.objects.filter(expires_at__lt=now - timedelta(hours=1)).delete()
    return AuthChallenge.objects.create(
        nonce=nonce, wallet=wallet, message=message, expires_at=expires_at
    )


def challenge_verify(*, wallet: str, nonce: str, signature: str) -> str:
    """Check the signature of a challenge and spend its nonce; return the wallet."""
    try:
        signature_bytes = base58.b58decode(signature)
        key = VerifyKey(base58.b58decode(wallet))
    except ValueError:
        raise AuthFailed("malformed wallet or signature") from None
    if len(signature_bytes) != 64:
        raise AuthFailed("malformed signature")
    with transaction.atomic():
        challenge = (
            AuthChallenge.objects.select_for_update()
            .filter(nonce=nonce, wallet=wallet, used_at__isnull=True)
            .first()
        )
        if challenge is None or challenge.expires_at <= timezone.now():
            raise AuthFailed("unknown, used or expired nonce")
        try:
            key.verify(challenge.message.encode(), signature_bytes)
        except BadSignatureError:
            raise AuthFailed("bad signature") from None
        challenge.used_at = timezone.now()
        challenge.save(update_fields=["used_at"])
    return wallet


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_at_ms: int


def token_issue(wallet: str) -> IssuedToken:
    token = signing.dumps({"w": wallet}, salt=TOKEN_SALT)
    expires = timezone.now() + timedelta(seconds=settings.FUNPUMP_TOKEN_TTL)
    return IssuedToken(token=token, expires_at_ms=millis(expires))


def token_wallet(token: str) -> str | None:
    """The wallet a token was issued to, or None if it is forged, malformed or expired."""
    if len(token) > 512:
        return None
    try:
        payload = signing.loads(token, salt=TOKEN_SALT, max_age=settings.FUNPUMP_TOKEN_TTL)
    except signing.BadSignature:
        return None
    wallet = payload.get("w") if isinstance(payload, dict) else None
    return wallet if wallet_is_valid(wallet) else None


def wallet_user(wallet: str) -> AbstractBaseUser:
    """The Django user standing for a wallet (for sessions and the admin)."""
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=wallet)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def user_wallet(user: object) -> str | None:
    """The wallet of a signed-in user, if its username is one."""
    if not getattr(user, "is_authenticated", False):
        return None
    username = getattr(user, "username", None)
    return username if wallet_is_valid(username) else None
