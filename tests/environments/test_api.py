"""HTTP API of environments: list, detail, launch, trade history."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import base58
import pytest
from django.test import Client

from environments.models import Environment
from environments.services import chat_post, environment_join
from tests.conftest import Wallet
from trading.models import Trade
from trading.services import trade_execute

pytestmark = pytest.mark.django_db

ENVIRONMENTS = "/api/environments"
SUMMARY_FIELDS = {
    "id",
    "name",
    "tokenMint",
    "virtualSolReserves",
    "virtualTokenReserves",
    "participants",
    "realSolReserves",
    "realTokenReserves",
    "complete",
    "price",
    "marketCap",
    "sequence",
    "fees",
}
TRADE_FIELDS = {
    "userId",
    "amount",
    "price",
    "timestamp",
    "isBuy",
    "id",
    "sequence",
    "solAmount",
    "tokenAmount",
    "fee",
}
DIGITS = re.compile(r"^[0-9]+$")
DECIMAL = re.compile(r"^[0-9]+(\.[0-9]+)?$")


def post_json(client: Client, url: str, body: Any, **extra: Any) -> Any:
    return client.post(url, data=json.dumps(body), content_type="application/json", **extra)


def bearer(wallet: Wallet) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {wallet.token}"}


def significant_digits(text: str) -> int:
    return len(text.replace(".", "").lstrip("0"))


def assert_summary(body: dict[str, Any], environment: Environment) -> None:
    assert set(body) >= SUMMARY_FIELDS, set(body)
    assert "chatHistory" not in body and "trades" not in body and "balance" not in body
    assert body["id"] == environment.id
    assert body["name"] == environment.name
    assert body["tokenMint"] == environment.token_mint
    for field in ("virtualSolReserves", "virtualTokenReserves", "realSolReserves"):
        assert isinstance(body[field], str) and DIGITS.match(body[field]), (field, body[field])
    assert isinstance(body["realTokenReserves"], str) and DIGITS.match(body["realTokenReserves"])
    assert body["virtualSolReserves"] == str(environment.virtual_sol_reserves)
    assert body["virtualTokenReserves"] == str(environment.virtual_token_reserves)
    assert body["realSolReserves"] == str(environment.real_sol_reserves)
    assert body["realTokenReserves"] == str(environment.real_token_reserves)
    assert isinstance(body["participants"], int) and not isinstance(body["participants"], bool)
    assert body["complete"] is environment.complete
    assert isinstance(body["sequence"], int)
    assert body["sequence"] == environment.sequence
    assert body["fees"] == {
        "protocolBps": environment.protocol_fee_bps,
        "creatorBps": environment.creator_fee_bps,
    }
    price = body["price"]
    assert isinstance(price, str) and DECIMAL.match(price), price  # no exponent, no sign
    assert significant_digits(price) >= 10
    expected = (Decimal(environment.virtual_sol_reserves) / 10**9) / (
        Decimal(environment.virtual_token_reserves) / 10**6
    )
    assert abs(Decimal(price) - expected) <= expected * Decimal("1e-9")
    assert body["marketCap"] == str(
        environment.virtual_sol_reserves * 10**15 // environment.virtual_token_reserves
    )


# --- list and detail ---------------------------------------------------------------------------


def test_list_has_results_and_next(environment: Environment) -> None:
    response = Client().get(ENVIRONMENTS)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "next"}
    assert body["next"] is None
    assert len(body["results"]) == 1
    assert_summary(body["results"][0], environment)


def test_list_of_nothing_is_empty(db: None) -> None:
    assert Client().get(ENVIRONMENTS).json() == {"results": [], "next": None}


def test_summary_values_for_default_curve(environment: Environment) -> None:
    (body,) = Client().get(ENVIRONMENTS).json()["results"]
    assert body["virtualSolReserves"] == "30000000000"
    assert body["virtualTokenReserves"] == "1073000000000000"
    assert body["realSolReserves"] == "0"
    assert body["realTokenReserves"] == "793100000000000"
    assert body["participants"] == 0
    assert body["complete"] is False
    assert body["sequence"] == 0
    assert body["fees"] == {"protocolBps": 95, "creatorBps": 30}
    assert body["marketCap"] == str(30_000_000_000 * 10**15 // 1_073_000_000_000_000)
    assert body["price"].startswith("0.0000000279589934")


def test_summary_follows_trades(environment: Environment, alice: Wallet) -> None:
    environment_join(environment_id=environment.id, wallet=alice.address)
    trade_execute(
        environment_id=environment.id, wallet=alice.address, amount=1_000_000_000, is_buy=True
    )
    environment.refresh_from_db()
    body = Client().get(f"{ENVIRONMENTS}/{environment.id}").json()
    assert_summary(body, environment)
    assert body["virtualSolReserves"] == str(30_000_000_000 + 987_654_320)
    assert body["virtualTokenReserves"] == str(1_073_000_000_000_000 - 34_199_203_154_141)
    assert body["sequence"] == 1


def test_list_pagination_with_limit_and_next(make_environment: Callable[..., Environment]) -> None:
    created = {make_environment(f"Launch {index}").id for index in range(5)}
    client = Client()
    seen: list[str] = []
    url: str | None = f"{ENVIRONMENTS}?limit=2"
    pages = 0
    while url is not None:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        assert len(body["results"]) <= 2
        seen += [item["id"] for item in body["results"]]
        url = body["next"]
        pages += 1
        assert pages <= 5
    assert pages == 3
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == created


def test_list_is_newest_first(make_environment: Callable[..., Environment]) -> None:
    environments = [make_environment(f"Launch {index}") for index in range(3)]
    ids = [item["id"] for item in Client().get(ENVIRONMENTS).json()["results"]]
    expected = sorted(environments, key=lambda env: (-env.created_at.timestamp(), env.id))
    assert ids == [env.id for env in expected]


def test_list_next_is_null_on_exact_last_page(
    make_environment: Callable[..., Environment],
) -> None:
    for index in range(2):
        make_environment(f"Launch {index}")
    body = Client().get(f"{ENVIRONMENTS}?limit=2").json()
    assert len(body["results"]) == 2
    assert body["next"] is None


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=abc", "offset=-1"])
def test_list_bad_paging_is_invalid_message(environment: Environment, query: str) -> None:
    response = Client().get(f"{ENVIRONMENTS}?{query}")
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_MESSAGE"


def test_detail(environment: Environment) -> None:
    response = Client().get(f"{ENVIRONMENTS}/{environment.id}")
    assert response.status_code == 200
    assert_summary(response.json(), environment)


def test_detail_of_unknown_environment_is_not_found(db: None) -> None:
    response = Client().get(f"{ENVIRONMENTS}/env_doesnotexist")
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "ENVIRONMENT_NOT_FOUND"
    assert isinstance(body["message"], str)


# --- launch ------------------------------------------------------------------------------------


def test_anonymous_launch_is_refused(db: None) -> None:
    response = post_json(Client(), ENVIRONMENTS, {"name": "Anonymous"})
    assert response.status_code in {401, 403}
    assert response.json()["code"] == "UNAUTHORIZED"
    assert not Environment.objects.exists()


def test_signed_in_launch_creates_environment(alice: Wallet) -> None:
    response = post_json(Client(), ENVIRONMENTS, {"name": "My launch"}, **bearer(alice))
    assert response.status_code == 201, response.content
    body = response.json()
    environment = Environment.objects.get(pk=body["id"])
    assert body["launchedBy"] == alice.address
    assert environment.launched_by == alice.address
    assert environment.name == "My launch"
    assert_summary(body, environment)
    assert len(base58.b58decode(body["tokenMint"])) == 32  # generated
    # It is listed and readable.
    assert Client().get(f"{ENVIRONMENTS}/{body['id']}").json()["id"] == body["id"]
    assert [item["id"] for item in Client().get(ENVIRONMENTS).json()["results"]] == [body["id"]]


def test_launch_name_of_64_characters_is_accepted(alice: Wallet) -> None:
    response = post_json(Client(), ENVIRONMENTS, {"name": "n" * 64}, **bearer(alice))
    assert response.status_code == 201, response.content
    assert response.json()["name"] == "n" * 64


@pytest.mark.parametrize("name", ["n" * 65, "", "   ", None])
def test_launch_with_bad_name_is_invalid_message(alice: Wallet, name: Any) -> None:
    response = post_json(Client(), ENVIRONMENTS, {"name": name}, **bearer(alice))
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "INVALID_MESSAGE"
    assert not Environment.objects.exists()


def test_launch_without_name_is_invalid_message(alice: Wallet) -> None:
    response = post_json(Client(), ENVIRONMENTS, {}, **bearer(alice))
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_MESSAGE"


@pytest.mark.parametrize(
    "mint",
    [
        "not-a-mint",
        "0" * 44,  # outside the base58 alphabet
        "O" * 40,
        base58.b58encode(b"\x05" * 31).decode(),  # base58 but 31 bytes
        base58.b58encode(b"\x05" * 33).decode(),
        "1" * 45,
        12345,
    ],
)
def test_launch_with_bad_token_mint_is_invalid_message(alice: Wallet, mint: Any) -> None:
    response = post_json(
        Client(), ENVIRONMENTS, {"name": "Bad mint", "tokenMint": mint}, **bearer(alice)
    )
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "INVALID_MESSAGE"
    assert not Environment.objects.exists()


def test_launch_keeps_a_valid_token_mint(alice: Wallet) -> None:
    mint = base58.b58encode(bytes(range(1, 33))).decode()
    response = post_json(
        Client(), ENVIRONMENTS, {"name": "Mirror", "tokenMint": mint}, **bearer(alice)
    )
    assert response.status_code == 201, response.content
    assert response.json()["tokenMint"] == mint
    assert Environment.objects.get(pk=response.json()["id"]).token_mint == mint


# --- trade history -----------------------------------------------------------------------------


@pytest.fixture
def traded(environment: Environment, alice: Wallet, bob: Wallet) -> list[Trade]:
    """Five trades by two wallets: sequences 1..5."""
    environment_join(environment_id=environment.id, wallet=alice.address)
    environment_join(environment_id=environment.id, wallet=bob.address)
    trades = []
    for wallet, amount in (
        (alice, 1_000_000_000),
        (bob, 500_000_000),
        (alice, 2_000_000_000),
        (bob, 100_000_000),
    ):
        trades.append(
            trade_execute(
                environment_id=environment.id, wallet=wallet.address, amount=amount, is_buy=True
            ).trade
        )
    sold = trade_execute(
        environment_id=environment.id,
        wallet=alice.address,
        amount=trades[0].token_amount,
        is_buy=False,
    ).trade
    trades.append(sold)
    assert [trade.sequence for trade in trades] == [1, 2, 3, 4, 5]
    return trades


def trades_url(environment: Environment, query: str = "") -> str:
    return f"{ENVIRONMENTS}/{environment.id}/trades" + (f"?{query}" if query else "")


def test_trades_newest_first_with_every_field(
    environment: Environment, traded: list[Trade], alice: Wallet
) -> None:
    response = Client().get(trades_url(environment))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "next"}
    assert body["next"] is None
    results = body["results"]
    assert [item["sequence"] for item in results] == [5, 4, 3, 2, 1]
    by_sequence = {trade.sequence: trade for trade in traded}
    for item in results:
        assert set(item) >= TRADE_FIELDS, set(item)
        trade = by_sequence[item["sequence"]]
        assert item["id"] == str(trade.pk)
        assert item["userId"] == trade.wallet
        assert item["amount"] == str(trade.amount)
        assert item["isBuy"] is trade.is_buy
        assert item["solAmount"] == str(trade.sol_amount)
        assert item["tokenAmount"] == str(trade.token_amount)
        assert item["fee"] == str(trade.protocol_fee + trade.creator_fee)
        assert isinstance(item["timestamp"], int)
        assert item["timestamp"] == int(trade.created_at.timestamp() * 1000)
        for field in ("amount", "solAmount", "tokenAmount", "fee"):
            assert DIGITS.match(item[field]), (field, item[field])
        assert DECIMAL.match(item["price"]), item["price"]
        assert significant_digits(item["price"]) >= 10
        expected = (Decimal(trade.sol_amount) / 10**9) / (Decimal(trade.token_amount) / 10**6)
        assert abs(Decimal(item["price"]) - expected) <= expected * Decimal("1e-9")
    first = results[-1]
    assert first["userId"] == alice.address
    assert first["amount"] == "1000000000"
    assert first["solAmount"] == "987654320"
    assert first["tokenAmount"] == "34199203154141"
    assert first["fee"] == str(9_382_717 + 2_962_963)
    assert results[0]["isBuy"] is False


def test_trades_before_and_limit(environment: Environment, traded: list[Trade]) -> None:
    client = Client()
    body = client.get(trades_url(environment, "before=4")).json()
    assert [item["sequence"] for item in body["results"]] == [3, 2, 1]
    body = client.get(trades_url(environment, "limit=2")).json()
    assert [item["sequence"] for item in body["results"]] == [5, 4]
    assert body["next"] is not None
    body = client.get(trades_url(environment, "before=5&limit=2")).json()
    assert [item["sequence"] for item in body["results"]] == [4, 3]
    body = client.get(trades_url(environment, "before=1")).json()
    assert body == {"results": [], "next": None}


def test_trades_next_url_walks_all_pages(environment: Environment, traded: list[Trade]) -> None:
    client = Client()
    url: str | None = trades_url(environment, "limit=2")
    pages: list[list[int]] = []
    while url is not None:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append([item["sequence"] for item in body["results"]])
        url = body["next"]
        assert len(pages) <= 5
    assert pages == [[5, 4], [3, 2], [1]]


def test_trades_next_is_null_when_the_last_page_is_full(
    environment: Environment, traded: list[Trade]
) -> None:
    client = Client()
    first = client.get(trades_url(environment, "limit=5")).json()
    assert len(first["results"]) == 5
    assert first["next"] is None


def test_trades_pages_skip_chat_sequences(environment: Environment, alice: Wallet) -> None:
    """Chat lines share the sequence: trade pages still hold only trades, none lost."""
    environment_join(environment_id=environment.id, wallet=alice.address)
    for index in range(3):
        chat_post(environment_id=environment.id, wallet=alice.address, message=f"hi {index}")
        trade_execute(
            environment_id=environment.id,
            wallet=alice.address,
            amount=100_000_000,
            is_buy=True,
        )
    client = Client()
    url: str | None = trades_url(environment, "limit=2")
    seen: list[int] = []
    for _ in range(5):
        if url is None:
            break
        body = client.get(url).json()
        seen += [item["sequence"] for item in body["results"]]
        url = body["next"]
    assert url is None
    assert seen == [6, 4, 2]


@pytest.mark.parametrize("query", ["limit=201", "limit=0", "limit=x", "before=0", "before=x"])
def test_trades_bad_query_is_invalid_message(environment: Environment, query: str) -> None:
    response = Client().get(trades_url(environment, query))
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "INVALID_MESSAGE"


def test_trades_limit_of_200_is_accepted(environment: Environment, traded: list[Trade]) -> None:
    response = Client().get(trades_url(environment, "limit=200"))
    assert response.status_code == 200
    assert len(response.json()["results"]) == 5


def test_trades_of_environment_without_trades(environment: Environment) -> None:
    assert Client().get(trades_url(environment)).json() == {"results": [], "next": None}


def test_trades_of_other_environments_are_not_listed(
    make_environment: Callable[..., Environment], traded: list[Trade]
) -> None:
    other = make_environment("Other")
    assert Client().get(trades_url(other)).json()["results"] == []


def test_trades_of_unknown_environment_is_404(db: None) -> None:
    response = Client().get(f"{ENVIRONMENTS}/env_doesnotexist/trades")
    assert response.status_code == 404


def test_trades_of_unknown_environment_says_environment_not_found(db: None) -> None:
    response = Client().get(f"{ENVIRONMENTS}/env_doesnotexist/trades")
    assert response.status_code == 404
    assert response.json()["code"] == "ENVIRONMENT_NOT_FOUND"
