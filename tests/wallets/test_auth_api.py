"""Wallet sign-in over HTTP: challenge, ed25519 verify, bearer tokens, sessions, throttling."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import base58
import pytest
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from nacl.signing import SigningKey

from environments.models import Environment
from tests.conftest import Wallet
from wallets.models import AuthChallenge
from wallets.services import TOKEN_SALT, token_issue

pytestmark = pytest.mark.django_db

HOST = "127.0.0.1:8000"
CHALLENGE = "/api/auth/challenge"
VERIFY = "/api/auth/verify"
ENVIRONMENTS = "/api/environments"


@pytest.fixture(autouse=True)
def _fresh_throttle_cache() -> Any:
    """The auth throttle counts in the cache: every test starts with a clean slate."""
    cache.clear()
    yield
    cache.clear()


def now_ms() -> int:
    return int(time.time() * 1000)


def post(client: Client, url: str, body: Any, **extra: Any) -> Any:
    return client.post(
        url,
        data=json.dumps(body),
        content_type="application/json",
        HTTP_HOST=HOST,
        **extra,
    )


def challenge(client: Client, wallet: str) -> dict[str, Any]:
    response = post(client, CHALLENGE, {"wallet": wallet})
    assert response.status_code == 200, response.content
    return response.json()


def sign(key: SigningKey, message: str) -> str:
    return base58.b58encode(key.sign(message.encode("utf-8")).signature).decode()


def verify(client: Client, wallet: str, nonce: str, signature: str) -> Any:
    return post(client, VERIFY, {"wallet": wallet, "nonce": nonce, "signature": signature})


def sign_in(client: Client, wallet: Wallet) -> dict[str, Any]:
    issued = challenge(client, wallet.address)
    response = verify(client, wallet.address, issued["nonce"], sign(wallet.key, issued["message"]))
    assert response.status_code == 200, response.content
    return response.json()


def assert_unauthorized(response: Any) -> None:
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["code"] == "UNAUTHORIZED", body
    assert isinstance(body["message"], str)


# --- challenge ---------------------------------------------------------------------------------


def test_challenge_returns_message_with_nonce_and_host(alice: Wallet) -> None:
    before = now_ms()
    body = challenge(Client(), alice.address)
    assert set(body) == {"message", "nonce", "expiresAt"}
    assert isinstance(body["nonce"], str) and body["nonce"]
    assert body["nonce"] in body["message"]
    assert HOST in body["message"]
    assert alice.address in body["message"]
    assert isinstance(body["expiresAt"], int)
    # Valid for five minutes.
    assert before + 299_000 <= body["expiresAt"] <= now_ms() + 301_000


def test_challenge_nonces_are_fresh(alice: Wallet) -> None:
    client = Client()
    first = challenge(client, alice.address)
    second = challenge(client, alice.address)
    assert first["nonce"] != second["nonce"]


@pytest.mark.parametrize(
    "wallet",
    [
        "not-a-wallet",
        "",
        "0" * 44,  # '0' is not in the base58 alphabet
        base58.b58encode(b"\x01" * 31).decode(),  # valid base58, wrong length
        base58.b58encode(b"\x01" * 33).decode(),
        12345,
        None,
    ],
)
def test_challenge_with_malformed_wallet_is_invalid_message(wallet: Any) -> None:
    response = post(Client(), CHALLENGE, {"wallet": wallet})
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "INVALID_MESSAGE"
    assert not AuthChallenge.objects.exists()


def test_challenge_without_wallet_is_invalid_message() -> None:
    response = post(Client(), CHALLENGE, {})
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_MESSAGE"


# --- verify ------------------------------------------------------------------------------------


def test_verify_with_real_signature_issues_token(alice: Wallet) -> None:
    client = Client()
    issued = challenge(client, alice.address)
    before = now_ms()
    response = verify(client, alice.address, issued["nonce"], sign(alice.key, issued["message"]))
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"token", "expiresAt"}
    assert isinstance(body["token"], str) and body["token"]
    assert isinstance(body["expiresAt"], int)
    assert body["expiresAt"] > before + 60_000  # in the future, in milliseconds
    assert body["expiresAt"] < before + 10 * 365 * 24 * 3600 * 1000


def test_token_works_as_bearer_on_launch(alice: Wallet) -> None:
    token = sign_in(Client(), alice)["token"]
    # A fresh client: no session, only the bearer token; no CSRF token needed either.
    api = Client(enforce_csrf_checks=True)
    response = post(
        api, ENVIRONMENTS, {"name": "Bearer launch"}, HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 201, response.content
    assert response.json()["launchedBy"] == alice.address
    assert Environment.objects.get(pk=response.json()["id"]).launched_by == alice.address


def test_verify_starts_a_session(alice: Wallet) -> None:
    client = Client()
    sign_in(client, alice)
    assert client.session.get("_auth_user_id")
    user = get_user_model().objects.get(pk=client.session["_auth_user_id"])
    assert user.username == alice.address
    response = post(client, ENVIRONMENTS, {"name": "Session launch"})
    assert response.status_code == 201, response.content
    assert response.json()["launchedBy"] == alice.address


def test_session_post_follows_csrf_rules(alice: Wallet) -> None:
    client = Client(enforce_csrf_checks=True)
    sign_in(client, alice)  # the sign-in endpoints themselves need no CSRF token
    refused = post(client, ENVIRONMENTS, {"name": "No CSRF"})
    assert refused.status_code == 403, refused.content
    assert not Environment.objects.filter(name="No CSRF").exists()

    csrf = client.cookies["csrftoken"].value
    accepted = post(client, ENVIRONMENTS, {"name": "With CSRF"}, HTTP_X_CSRFTOKEN=csrf)
    assert accepted.status_code == 201, accepted.content
    assert accepted.json()["launchedBy"] == alice.address


def test_bad_signature_is_unauthorized(alice: Wallet) -> None:
    client = Client()
    issued = challenge(client, alice.address)
    garbage = base58.b58encode(b"\x07" * 64).decode()
    assert_unauthorized(verify(client, alice.address, issued["nonce"], garbage))


def test_signature_of_another_message_is_unauthorized(alice: Wallet) -> None:
    client = Client()
    issued = challenge(client, alice.address)
    signature = sign(alice.key, issued["message"] + " tampered")
    assert_unauthorized(verify(client, alice.address, issued["nonce"], signature))


def test_malformed_signature_is_unauthorized(alice: Wallet) -> None:
    client = Client()
    issued = challenge(client, alice.address)
    for signature in ("0OIl", base58.b58encode(b"\x01" * 10).decode()):
        response = verify(client, alice.address, issued["nonce"], signature)
        assert response.status_code in {400, 401}, response.content
    # The nonce was not spent by the failures.
    good = sign(alice.key, issued["message"])
    assert verify(client, alice.address, issued["nonce"], good).status_code == 200


def test_signature_by_another_key_is_unauthorized(alice: Wallet, bob: Wallet) -> None:
    client = Client()
    issued = challenge(client, alice.address)
    assert_unauthorized(
        verify(client, alice.address, issued["nonce"], sign(bob.key, issued["message"]))
    )
    assert "_auth_user_id" not in client.session


def test_unknown_nonce_is_unauthorized(alice: Wallet) -> None:
    client = Client()
    issued = challenge(client, alice.address)
    signature = sign(alice.key, issued["message"])
    assert_unauthorized(verify(client, alice.address, "no-such-nonce", signature))


def test_nonce_works_once(alice: Wallet) -> None:
    client = Client()
    issued = challenge(client, alice.address)
    signature = sign(alice.key, issued["message"])
    assert verify(client, alice.address, issued["nonce"], signature).status_code == 200
    assert_unauthorized(verify(Client(), alice.address, issued["nonce"], signature))


def test_nonce_issued_for_another_wallet_is_unauthorized(alice: Wallet, bob: Wallet) -> None:
    client = Client()
    issued = challenge(client, alice.address)
    # Bob signs Alice's challenge with his own key and claims it for his wallet.
    signature = sign(bob.key, issued["message"])
    assert_unauthorized(verify(client, bob.address, issued["nonce"], signature))
    # And the nonce is still good for Alice.
    good = sign(alice.key, issued["message"])
    assert verify(client, alice.address, issued["nonce"], good).status_code == 200


def test_expired_nonce_is_unauthorized(alice: Wallet) -> None:
    client = Client()
    issued = challenge(client, alice.address)
    AuthChallenge.objects.filter(nonce=issued["nonce"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    signature = sign(alice.key, issued["message"])
    assert_unauthorized(verify(client, alice.address, issued["nonce"], signature))
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize("wallet", ["not-a-wallet", base58.b58encode(b"\x02" * 31).decode()])
def test_verify_with_malformed_wallet_is_invalid_message(wallet: str) -> None:
    signature = base58.b58encode(b"\x07" * 64).decode()
    response = verify(Client(), wallet, "nonce", signature)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "INVALID_MESSAGE"


def test_verify_with_missing_fields_is_invalid_message(alice: Wallet) -> None:
    response = post(Client(), VERIFY, {"wallet": alice.address})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "INVALID_MESSAGE"
    assert "nonce" in body["details"] and "signature" in body["details"]


# --- bearer tokens -----------------------------------------------------------------------------


def expired_token(wallet: str) -> str:
    """A correctly signed token issued two days ago (the TTL is one day)."""

    class Backdated(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - 2 * 24 * 3600)

    return Backdated(salt=TOKEN_SALT).sign_object({"w": wallet})


@pytest.mark.parametrize(
    "token_for",
    [
        pytest.param(lambda wallet: "garbage", id="garbage"),
        pytest.param(lambda wallet: "", id="empty"),
        pytest.param(lambda wallet: "x" * 600, id="huge"),
        pytest.param(
            lambda wallet: signing.dumps({"w": wallet}, salt=TOKEN_SALT, key="not-the-secret"),
            id="forged-key",
        ),
        pytest.param(lambda wallet: signing.dumps({"w": wallet}, salt="other"), id="other-salt"),
        pytest.param(lambda wallet: token_issue(wallet).token[:-2] + "zz", id="tampered"),
        pytest.param(
            lambda wallet: signing.dumps({"w": "not-a-wallet"}, salt=TOKEN_SALT),
            id="signed-bad-wallet",
        ),
        pytest.param(expired_token, id="expired"),
    ],
)
def test_bad_bearer_token_is_unauthorized(alice: Wallet, token_for: Any) -> None:
    token = token_for(alice.address)
    response = post(Client(), ENVIRONMENTS, {"name": "Nope"}, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401, response.content
    assert response.json()["code"] == "UNAUTHORIZED"
    assert not Environment.objects.exists()


def test_expired_token_helper_is_otherwise_valid(alice: Wallet) -> None:
    """Guard for the test above: the backdated token is refused only for its age."""
    token = expired_token(alice.address)
    payload = signing.loads(token, salt=TOKEN_SALT)
    assert payload == {"w": alice.address}
    with pytest.raises(signing.SignatureExpired):
        signing.loads(token, salt=TOKEN_SALT, max_age=24 * 3600)


def test_bad_bearer_token_also_refused_on_reads(alice: Wallet) -> None:
    response = Client().get(ENVIRONMENTS, HTTP_AUTHORIZATION="Bearer garbage", HTTP_HOST=HOST)
    assert response.status_code == 401


def test_anonymous_launch_is_refused() -> None:
    response = post(Client(), ENVIRONMENTS, {"name": "Anonymous"})
    assert response.status_code in {401, 403}
    assert response.json()["code"] == "UNAUTHORIZED"
    assert not Environment.objects.exists()


# --- throttling --------------------------------------------------------------------------------


def test_fourth_challenge_from_one_ip_is_rate_limited(settings: Any, alice: Wallet) -> None:
    settings.FUNPUMP_AUTH_RATE_LIMIT = "3/60"
    cache.clear()
    client = Client()
    for _ in range(3):
        assert post(client, CHALLENGE, {"wallet": alice.address}).status_code == 200
    response = post(client, CHALLENGE, {"wallet": alice.address})
    assert response.status_code == 429, response.content
    body = response.json()
    assert body["code"] == "RATE_LIMITED"
    retry = body["details"]["retryAfterMs"]
    assert isinstance(retry, int)
    assert 0 < retry <= 60_000
    assert AuthChallenge.objects.count() == 3


def test_challenge_and_verify_share_the_limit(settings: Any, alice: Wallet) -> None:
    settings.FUNPUMP_AUTH_RATE_LIMIT = "3/60"
    cache.clear()
    client = Client()
    issued = challenge(client, alice.address)
    challenge(client, alice.address)
    signature = sign(alice.key, issued["message"])
    assert verify(client, alice.address, issued["nonce"], signature).status_code == 200
    response = verify(client, alice.address, issued["nonce"], signature)
    assert response.status_code == 429
    assert response.json()["code"] == "RATE_LIMITED"


def test_rate_limit_is_per_ip(settings: Any, alice: Wallet) -> None:
    settings.FUNPUMP_AUTH_RATE_LIMIT = "3/60"
    cache.clear()
    client = Client()
    for _ in range(3):
        post(client, CHALLENGE, {"wallet": alice.address}, REMOTE_ADDR="10.0.0.1")
    limited = post(client, CHALLENGE, {"wallet": alice.address}, REMOTE_ADDR="10.0.0.1")
    assert limited.status_code == 429
    other = post(client, CHALLENGE, {"wallet": alice.address}, REMOTE_ADDR="10.0.0.2")
    assert other.status_code == 200


def test_forwarded_for_header_does_not_bypass_the_limit(settings: Any, alice: Wallet) -> None:
    settings.FUNPUMP_AUTH_RATE_LIMIT = "3/60"
    cache.clear()
    client = Client()
    statuses = [
        post(
            client,
            CHALLENGE,
            {"wallet": alice.address},
            REMOTE_ADDR="10.0.0.1",
            HTTP_X_FORWARDED_FOR=f"198.51.100.{index}",
        ).status_code
        for index in range(5)
    ]
    assert statuses[3:] == [429, 429], statuses
