"""Account protection: admin lockout, login CSRF, Content-Security-Policy, HSTS, socket Origin."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import base58
import pytest
import websockets
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from funpump.asgi import application
from gateway.consumers import origin_allowed
from tests.conftest import Wallet
from tests.e2e.conftest import daphne_server  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1:8000"
ADMIN_LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "a-long-admin-password-1"


# --- admin lockout (django-axes) ----------------------------------------------------------------


@pytest.fixture
def admin_user(db: None) -> Any:
    return get_user_model().objects.create_superuser("operator", "op@example.com", PASSWORD)


def admin_login(client: Client, password: str, username: str = "operator") -> Any:
    return client.post(ADMIN_LOGIN, {"username": username, "password": password})


def signed_in_to_admin(client: Client) -> bool:
    return client.get("/admin/").status_code == 200


def test_the_admin_lets_an_operator_in_after_a_few_typos(admin_user: Any) -> None:
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert admin_login(client, "wrong").status_code == 200  # the form again, with an error
    assert admin_login(client, PASSWORD).status_code == 302
    assert signed_in_to_admin(client)


def test_repeated_wrong_admin_passwords_lock_the_login_even_for_the_right_one(
    admin_user: Any,
) -> None:
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        admin_login(client, "guess")
    refused = admin_login(client, PASSWORD)
    assert refused.status_code == 429
    assert b"too many login attempts" in refused.content
    assert "sessionid" not in client.cookies
    assert not signed_in_to_admin(client)
    # The lockout is for this username from this address: another address still gets in.
    elsewhere = Client(REMOTE_ADDR="203.0.113.9")
    assert admin_login(elsewhere, PASSWORD).status_code == 302
    assert signed_in_to_admin(elsewhere)


# --- login CSRF ---------------------------------------------------------------------------------


def signed_fields(client: Client, wallet: Wallet) -> dict[str, str]:
    response = client.post(
        "/api/auth/challenge",
        json.dumps({"wallet": wallet.address}),
        content_type="application/json",
        HTTP_HOST=HOST,
    )
    assert response.status_code == 200, response.content
    challenge = response.json()
    signature = wallet.key.sign(challenge["message"].encode()).signature
    return {
        "wallet": wallet.address,
        "nonce": challenge["nonce"],
        "signature": base58.b58encode(signature).decode(),
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content_type", "encode"),
    [
        ("application/x-www-form-urlencoded", urlencode),
        ("text/plain", json.dumps),  # what a form with enctype="text/plain" can send
        ("multipart/form-data; boundary=BoUnDaRy", None),
    ],
)
def test_a_cross_site_form_cannot_sign_a_browser_in(
    alice: Wallet, content_type: str, encode: Any
) -> None:
    """The attacker signs a challenge with their own wallet and posts it from their page."""
    attacker = Client()
    fields = signed_fields(attacker, alice)
    victim = Client()
    if encode is None:
        parts = [
            f'--BoUnDaRy\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in fields.items()
        ]
        body: str = "".join(parts) + "--BoUnDaRy--\r\n"
    else:
        body = encode(fields)
    refused = victim.post("/api/auth/verify", body, content_type=content_type, HTTP_HOST=HOST)
    assert refused.status_code == 415
    assert refused.json()["code"] == "INVALID_MESSAGE"
    assert "token" not in refused.json()
    assert "sessionid" not in victim.cookies
    # The nonce was not spent: the same fields as JSON (which needs the page's own script) work.
    accepted = victim.post(
        "/api/auth/verify", json.dumps(fields), content_type="application/json", HTTP_HOST=HOST
    )
    assert accepted.status_code == 200, accepted.content
    assert "sessionid" in victim.cookies


@pytest.mark.django_db
def test_a_challenge_is_only_issued_to_json(alice: Wallet) -> None:
    client = Client()
    for content_type, body in (
        ("application/x-www-form-urlencoded", f"wallet={alice.address}"),
        ("text/plain", json.dumps({"wallet": alice.address})),
    ):
        response = client.post("/api/auth/challenge", body, content_type=content_type)
        assert response.status_code == 415, content_type
        assert response.json()["code"] == "INVALID_MESSAGE"


# --- Content-Security-Policy and HSTS -----------------------------------------------------------


def policy(response: Any) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    directives = (part.strip().split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in directives}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/admin/login/", "/api/environments", "/api/health"])
def test_every_page_carries_a_content_security_policy(path: str) -> None:
    directives = policy(Client().get(path))
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]


@pytest.mark.django_db
def test_the_room_page_needs_no_inline_script_or_style() -> None:
    """The policy forbids inline code, so the page must not carry any (it would not run). A JSON
    data block (the protocol's constants) is not code: browsers never execute it."""
    page = Client().get("/").content.decode()
    assert re.findall(r'<script(?![^>]*\b(?:src=|type="application/json"))[^>]*>', page) == []
    assert "<style" not in page
    assert re.findall(r"\sstyle=", page) == []
    assert re.findall(r"\son[a-z]+=", page) == []


@pytest.mark.django_db
def test_hsts_is_sent_over_https_only(settings: Any) -> None:
    settings.SECURE_HSTS_SECONDS = 3600
    assert "Strict-Transport-Security" not in Client().get("/").headers
    secure = Client().get("/", secure=True)
    assert secure.headers["Strict-Transport-Security"] == "max-age=3600"


def production_setting(expression: str, **env: str) -> str:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    environment.update(
        DJANGO_SETTINGS_MODULE="funpump.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="x" * 50,
        **env,
    )
    result = subprocess.run(
        [sys.executable, "-c", f"from django.conf import settings as s; print({expression})"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_production_turns_hsts_on_for_a_year_and_it_is_configurable() -> None:
    assert production_setting("s.SECURE_HSTS_SECONDS") == str(365 * 24 * 3600)
    assert production_setting("s.SECURE_HSTS_SECONDS", DJANGO_HSTS_SECONDS="300") == "300"
    assert production_setting("s.SECURE_HSTS_INCLUDE_SUBDOMAINS") == "False"


# --- WebSocket Origin ---------------------------------------------------------------------------


def scope(origin: str | None, host: str, scheme: str = "ws", **headers: str) -> dict[str, Any]:
    pairs = [(b"host", host.encode())]
    if origin is not None:
        pairs.append((b"origin", origin.encode()))
    pairs += [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return {"type": "websocket", "scheme": scheme, "headers": pairs}


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        (None, "127.0.0.1:8000", "ws"),  # not a browser
        ("http://127.0.0.1:8000", "127.0.0.1:8000", "ws"),
        ("http://localhost:8000", "127.0.0.1:8000", "ws"),  # another allowed host, same port
        ("http://127.0.0.1", "127.0.0.1", "ws"),
        ("http://127.0.0.1:80", "127.0.0.1", "ws"),
        ("https://localhost", "localhost", "wss"),
        ("https://localhost:443", "localhost:443", "wss"),
        ("https://LOCALHOST:8443", "localhost:8443", "wss"),
        ("http://[::1]:8000", "[::1]:8000", "ws"),
    ],
)
def test_the_pages_own_origin_is_allowed(origin: str | None, host: str, scheme: str) -> None:
    assert origin_allowed(scope(origin, host, scheme))


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("https://127.0.0.1:8000", "127.0.0.1:8000", "ws"),  # scheme
        ("http://localhost:8443", "localhost:8443", "wss"),  # scheme
        ("http://127.0.0.1:9000", "127.0.0.1:8000", "ws"),  # port
        ("http://127.0.0.1", "127.0.0.1:8000", "ws"),  # port (80)
        ("http://127.0.0.1:8000", "127.0.0.1", "ws"),  # port
        ("https://localhost:8443", "localhost", "wss"),  # port (443)
        ("http://evil.example:8000", "127.0.0.1:8000", "ws"),  # host
        ("http://127.0.0.1.evil.example:8000", "127.0.0.1:8000", "ws"),  # host
        ("http://user@127.0.0.1:8000", "127.0.0.1:8000", "ws"),  # not an origin
        ("http://127.0.0.1:8000/path", "127.0.0.1:8000", "ws"),  # not an origin
        ("null", "127.0.0.1:8000", "ws"),  # sandboxed frames, file:// pages
        ("", "127.0.0.1:8000", "ws"),
    ],
)
def test_any_other_origin_is_refused(origin: str, host: str, scheme: str) -> None:
    assert not origin_allowed(scope(origin, host, scheme))


def test_a_trusted_proxys_forwarded_proto_decides_the_scheme(settings: Any) -> None:
    behind_tls = scope("https://localhost", "localhost", "ws", x_forwarded_proto="https")
    assert not origin_allowed(behind_tls)  # no proxy configured: anyone could send the header
    settings.NUM_PROXIES = 1
    assert origin_allowed(behind_tls)
    assert not origin_allowed(
        scope("http://localhost", "localhost", "ws", x_forwarded_proto="https")
    )


def test_an_exact_csrf_trusted_origin_is_allowed(settings: Any) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com"]
    assert origin_allowed(scope("https://app.example.com", "127.0.0.1:8000"))
    assert not origin_allowed(scope("https://app.example.com:8443", "127.0.0.1:8000"))
    assert not origin_allowed(scope("http://app.example.com", "127.0.0.1:8000"))


async def handshake(headers: list[tuple[bytes, bytes]]) -> bool:
    communicator = WebsocketCommunicator(application, "/ws", headers=headers)
    connected, _ = await communicator.connect()
    if connected:
        await communicator.disconnect()
    return connected


async def test_the_socket_checks_origin_against_the_host_it_was_reached_at(alice: Wallet) -> None:
    token = (b"authorization", f"Bearer {alice.token}".encode())
    same = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000"), token]
    assert await handshake(same)
    other_port = [(b"origin", b"http://127.0.0.1:8001"), (b"host", b"127.0.0.1:8000"), token]
    assert not await handshake(other_port)
    other_scheme = [(b"origin", b"https://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000"), token]
    assert not await handshake(other_scheme)


async def test_a_real_server_refuses_another_scheme_port_or_host(daphne_server: Any) -> None:  # noqa: F811
    server = await sync_to_async(daphne_server)()
    for origin in (
        f"https://127.0.0.1:{server.port}",
        f"http://127.0.0.1:{server.port + 1}",
        "http://127.0.0.1",
        f"http://elsewhere.example:{server.port}",
    ):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(server.ws, origin=origin)  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403, origin
    for origin in (server.http, f"http://localhost:{server.port}"):
        async with websockets.connect(server.ws, origin=origin) as client:  # type: ignore[arg-type]
            await client.send(json.dumps({"type": "HEARTBEAT", "requestId": "o"}))
            assert json.loads(await client.recv())["requestId"] == "o"
