"""Shared fixtures: wallets with real ed25519 keys, environments, authenticated sockets."""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Callable
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from nacl.signing import SigningKey

from environments.models import ChatMessage, Environment, Position
from environments.services import environment_create, environment_join
from funpump.asgi import application
from gateway.client import wallet_of
from kernel import realtime
from kernel.realtime import Event
from protocol.errors import DomainError, ErrorCode
from rewards.models import RewardTier
from trading.models import Trade
from trading.services import TradeResult, trade_execute
from trading.state import CurveConstants
from wallets.services import token_issue

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Wallets of the service tests (environments' and trading's), which need no real keys.
WALLET_A = "WalletAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
WALLET_B = "WalletBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
STRANGER = "StrangerSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS"
# What a browser on the page at http://127.0.0.1/ sends: the socket checks Origin against Host.
ORIGIN = (b"origin", b"http://127.0.0.1")
HOST = (b"host", b"127.0.0.1")


def require(condition: bool, reason: str) -> None:
    """Skip locally when a service is missing; in CI a missing service is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def postgres() -> None:
    require(
        connection.vendor == "postgresql",
        "needs PostgreSQL: set DATABASE_URL=postgres://postgres@127.0.0.1:5432/funpump",
    )


@pytest.fixture
def redis_url() -> str:
    require(bool(settings.REDIS_URL), "needs Redis: set REDIS_URL=redis://127.0.0.1:6379/0")
    return str(settings.REDIS_URL)


class Wallet:
    """A test user: a real ed25519 key, its base58 address and a sign-in token."""

    def __init__(self) -> None:
        self.key = SigningKey.generate()
        self.address = wallet_of(self.key)
        self.token = token_issue(self.address).token

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [ORIGIN, HOST, (b"authorization", f"Bearer {self.token}".encode())]


@pytest.fixture
def make_wallet() -> Callable[[], Wallet]:
    return Wallet


@pytest.fixture
def alice() -> Wallet:
    return Wallet()


@pytest.fixture
def bob() -> Wallet:
    return Wallet()


@pytest.fixture
def make_environment(db: None) -> Callable[..., Environment]:
    def make(name: str = "Test launch", **constants: Any) -> Environment:
        launched_by = constants.pop("launched_by", "")
        return environment_create(
            name=name, launched_by=launched_by, constants=CurveConstants(**constants)
        )

    return make


@pytest.fixture
def environment(make_environment: Callable[..., Environment]) -> Environment:
    return make_environment()


async def open_socket(
    wallet: Wallet | None = None, headers: list[tuple[bytes, bytes]] | None = None
) -> WebsocketCommunicator:
    """A connected communicator through the full ASGI app (origin header included)."""
    if headers is None:
        headers = wallet.headers() if wallet else [ORIGIN, HOST]
    communicator = WebsocketCommunicator(application, "/ws", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


@pytest.fixture(autouse=True)
async def _close_hub() -> Any:
    """Each test's event loop gets its own hub; stop it before the loop closes."""
    yield
    from kernel.realtime import Hub

    hub = Hub.instance
    if hub is not None and hub.loop is asyncio.get_running_loop():
        await hub.close()


@pytest.fixture(autouse=True)
def _no_participants_frames(settings: Any) -> None:
    """PARTICIPANTS frames (a roll call each second) only where a test asks for them
    (tests/gateway/test_participants.py): elsewhere the next frame a test reads stays the one it
    expects, whenever a roll call would fall."""
    settings.FUNPUMP_PARTICIPANTS_EVERY = 0


@pytest.fixture(autouse=True)
def _fresh_histories() -> None:
    """A room's history kept by one test (ids repeat across tests) is never another test's."""
    from environments.selectors import history_forget

    history_forget()


@pytest.fixture
def published_tiers(transactional_db):
    """The data migration's tiers: a transactional test's flush empties the table it filled."""
    migration = importlib.import_module("rewards.migrations.0002_default_tiers")
    for name, min_launches, min_volume, rate_bps in migration.DEFAULT_TIERS:
        RewardTier.objects.get_or_create(
            name=name,
            defaults={"min_launches": min_launches, "min_volume": min_volume, "rate_bps": rate_bps},
        )


# --- service tests: environments' and trading's ---------------------------------------------------


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row of every table a trade or a chat line can touch, in a comparable form."""
    return {
        "environments": list(Environment.objects.order_by("pk").values()),
        "positions": list(Position.objects.order_by("pk").values()),
        "trades": list(Trade.objects.order_by("pk").values()),
        "chat": list(ChatMessage.objects.order_by("pk").values()),
    }


def assert_refused(
    code: ErrorCode, call: Callable[[], object], message: str | None = None
) -> DomainError:
    """``call`` raises DomainError(code) and the database is exactly unchanged."""
    before = snapshot()
    with pytest.raises(DomainError) as caught:
        call()
    error = caught.value
    assert error.code == code, f"expected {code}, got {error.code} ({error.message})"
    if message is not None:
        assert error.message == message
    assert snapshot() == before
    return error


def buy(environment: Environment, wallet: str, amount: int, **kwargs: Any) -> TradeResult:
    return trade_execute(
        environment_id=environment.id, wallet=wallet, amount=amount, is_buy=True, **kwargs
    )


def join(environment: Environment, *wallets: str) -> None:
    for wallet in wallets:
        environment_join(environment_id=environment.id, wallet=wallet)


def position(environment: Environment, wallet: str) -> Position:
    return Position.objects.get(environment=environment, wallet=wallet)


def fresh(environment: Environment) -> Environment:
    return Environment.objects.get(pk=environment.pk)


@pytest.fixture
def joined(environment: Environment) -> Environment:
    """The default environment with wallets A and B joined (100 SOL each, no tokens)."""
    join(environment, WALLET_A, WALLET_B)
    return environment


@pytest.fixture
def dispatched(monkeypatch: pytest.MonkeyPatch) -> list[Event]:
    """Events handed to the real-time layer (``_dispatch`` replaced by a recorder)."""
    events: list[Event] = []
    monkeypatch.setattr(realtime.publish, "_dispatch", events.append)
    return events
