"""The lobby: GET /api/environments sorted as pump.fun's board, with each market's 24 h
figures; the OpenAPI schema of the sort and the candles."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from environments.models import Environment
from tests.trading.history import Clock, expected_figures, trade_at, wallet
from trading.curve import LAMPORTS_PER_SOL
from trading.models import Trade

pytestmark = pytest.mark.django_db

ENVIRONMENTS = "/api/environments"
SOL = LAMPORTS_PER_SOL
NOW = datetime(2026, 5, 4, 10, 30, 15, tzinfo=UTC)


def names(query: str = "") -> list[str]:
    response = Client().get(f"{ENVIRONMENTS}{query}")
    assert response.status_code == 200
    return [summary["name"] for summary in response.json()["results"]]


def walk(query: str) -> list[str]:
    """Every page's names, following ``next``."""
    listed: list[str] = []
    url: str | None = f"{ENVIRONMENTS}{query}"
    while url is not None:
        body = Client().get(url).json()
        listed += [summary["name"] for summary in body["results"]]
        url = body["next"]
    return listed


@pytest.fixture
def board(
    make_environment: Callable[..., Environment], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Environment]:
    """Five markets created an hour apart (Old first), traded at chosen moments.

    Old: 3 SOL yesterday (25 h ago) and 1 SOL an hour ago; Big: 20 SOL 2 hours ago; Busy: four
    2 SOL trades in the last 10 minutes; Sold: a buy then a sell 30 h ago; Quiet: never traded.
    """
    clock = Clock(monkeypatch, NOW - timedelta(hours=40))
    markets = {}
    for number, name in enumerate(("Old", "Big", "Busy", "Sold", "Quiet")):
        clock.moment = NOW - timedelta(hours=40 - number)
        markets[name] = make_environment(name=name)
    plan = [
        (NOW - timedelta(hours=30), "Sold", 10 * SOL, True),
        (NOW - timedelta(hours=30) + timedelta(minutes=1), "Sold", 10**14, False),
        (NOW - timedelta(hours=25), "Old", 3 * SOL, True),
        (NOW - timedelta(hours=2), "Big", 20 * SOL, True),
        (NOW - timedelta(hours=1), "Old", 1 * SOL, True),
    ] + [(NOW - timedelta(minutes=10 - m), "Busy", 2 * SOL, True) for m in range(4)]
    for moment, name, amount, is_buy in plan:
        trade_at(clock, moment, markets[name].id, wallet(name), amount, is_buy=is_buy)
    clock.moment = NOW
    return markets


def test_the_default_order_is_newest_first(board: dict[str, Environment]) -> None:
    assert names() == ["Quiet", "Sold", "Busy", "Big", "Old"]
    assert names("?sort=newest") == names()


def test_sorted_by_market_cap(board: dict[str, Environment]) -> None:
    caps = {name: Environment.objects.get(pk=e.pk).market_cap for name, e in board.items()}
    expected = sorted(caps, key=lambda name: (-caps[name], -board[name].created_at.timestamp()))
    assert names("?sort=marketCap") == expected
    assert expected[0] == "Big"
    body = Client().get(f"{ENVIRONMENTS}?sort=marketCap").json()
    assert [int(summary["marketCap"]) for summary in body["results"]] == sorted(
        caps.values(), reverse=True
    )


def test_sorted_by_last_trade_with_the_never_traded_last(board: dict[str, Environment]) -> None:
    assert names("?sort=lastTrade") == ["Busy", "Old", "Big", "Sold", "Quiet"]


def test_sorted_by_24h_volume(board: dict[str, Environment]) -> None:
    listed = names("?sort=volume24h")
    # Big 20 SOL > Busy 8 SOL > Old 1 SOL (its 3 SOL are 25 h old); then the markets without
    # trades in 24 h, by last trade: Sold, then Quiet.
    assert listed == ["Big", "Busy", "Old", "Sold", "Quiet"]
    body = Client().get(f"{ENVIRONMENTS}?sort=volume24h").json()
    for summary in body["results"]:
        trades = list(Trade.objects.filter(environment_id=summary["id"]))
        expected = expected_figures(trades, timezone.now())
        assert summary["volume24h"] == str(expected.volume)
        assert summary["trades24h"] == expected.trades
    volumes = [int(summary["volume24h"]) for summary in body["results"]]
    assert volumes == sorted(volumes, reverse=True)


@pytest.mark.parametrize("sort", ["newest", "marketCap", "volume24h", "lastTrade"])
def test_every_order_pages_with_next(board: dict[str, Environment], sort: str) -> None:
    first = Client().get(f"{ENVIRONMENTS}?sort={sort}&limit=2").json()
    assert set(first) == {"results", "next"}
    assert f"sort={sort}" in first["next"]
    assert walk(f"?sort={sort}&limit=2") == names(f"?sort={sort}")


def test_the_summary_carries_the_analytics(board: dict[str, Environment]) -> None:
    body = Client().get(f"{ENVIRONMENTS}/{board['Busy'].id}").json()
    assert body["volume24h"] == str(
        sum(t.sol_amount for t in Trade.objects.filter(environment=board["Busy"]))
    )
    assert body["trades24h"] == 4
    assert body["uniqueTraders24h"] == 1
    assert body["priceChange24h"].startswith("0.")  # four buys: the price rose
    assert body["progress"].startswith("0.")
    assert body["phase"] == "curve"
    assert body["pool"] is None
    quiet = Client().get(f"{ENVIRONMENTS}/{board['Quiet'].id}").json()
    assert (quiet["volume24h"], quiet["trades24h"], quiet["priceChange24h"]) == ("0", 0, "0")
    assert quiet["lastTradeAt"] is None


@pytest.mark.parametrize("sort", ["price", "MARKETCAP", "volume", "-newest"])
def test_an_unknown_sort_is_refused_clearly(board: dict[str, Environment], sort: str) -> None:
    response = Client().get(f"{ENVIRONMENTS}?sort={sort}")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "INVALID_MESSAGE"
    assert body["details"] == {
        "sort": ["sort must be one of newest, marketCap, volume24h, lastTrade"]
    }


def openapi() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(Client().get("/api/schema?format=json").content)
    return schema


def test_the_schema_documents_the_sort_and_the_candles(db: None) -> None:
    paths = openapi()["paths"]
    listing = {param["name"]: param for param in paths[ENVIRONMENTS]["get"]["parameters"]}
    assert listing["sort"]["schema"]["enum"] == ["newest", "marketCap", "volume24h", "lastTrade"]
    candles = paths["/api/environments/{environment_id}/candles"]["get"]
    assert {"interval", "before", "limit", "round"} <= {p["name"] for p in candles["parameters"]}
    assert "content" in candles["responses"]["200"]
