"""GET /api/environments/{id}/candles: OHLCV candles from the per-minute rows the trades
write, against a recomputation from the stored trades; paging, rounds, errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from environments.models import Environment, Position
from tests.trading.history import Clock, expected_candles, trade_at, wallet
from trading.curve import LAMPORTS_PER_SOL
from trading.models import Trade

# Exact prices need PostgreSQL: SQLite keeps a decimal column as a float (about 15 digits).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("postgres")]

SOL = LAMPORTS_PER_SOL
INTERVALS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14_400, "1d": 86_400}
# Across a day (and so every interval's) boundary: 2025-12-31 23:56 to 2026-01-01 04:10 UTC.
BASE = datetime(2025, 12, 31, 23, 56, 10, 250_000, tzinfo=UTC)
OFFSETS = [
    timedelta(seconds=0),
    timedelta(seconds=5),
    timedelta(seconds=49, microseconds=749_999),  # the last instant of its minute
    timedelta(seconds=49, microseconds=750_000),  # the first of the next
    timedelta(minutes=3, seconds=20),  # 23:59:30
    timedelta(minutes=3, seconds=50),  # 00:00:00.25, a new day
    timedelta(minutes=9),
    timedelta(minutes=19),
    timedelta(minutes=64),
    timedelta(hours=4, minutes=1),
    timedelta(hours=4, minutes=14),
]


def candles(environment: Environment, query: str = "") -> Any:
    return Client().get(f"/api/environments/{environment.id}/candles{query}")


@pytest.fixture
def traded(environment: Environment, monkeypatch: pytest.MonkeyPatch) -> list[Trade]:
    clock = Clock(monkeypatch, BASE)
    trades = []
    for number, offset in enumerate(OFFSETS):
        who = wallet("Alice" if number % 2 else "Bob")
        is_buy = number % 3 != 2
        amount = (1 + number % 4) * SOL if is_buy else 10**12
        trades.append(trade_at(clock, BASE + offset, environment.id, who, amount, is_buy=is_buy))
    assert len({trade.price for trade in trades}) == len(trades)
    return trades


@pytest.mark.parametrize("interval", list(INTERVALS))
def test_candles_are_the_trades_aggregated(
    environment: Environment, traded: list[Trade], interval: str
) -> None:
    response = candles(environment, f"?interval={interval}&limit=1000")
    assert response.status_code == 200
    body = response.json()
    assert body == {"results": expected_candles(traded, INTERVALS[interval]), "next": None}


def test_a_minute_without_trades_has_no_candle(
    environment: Environment, traded: list[Trade]
) -> None:
    times = [candle["time"] for candle in candles(environment, "?limit=1000").json()["results"]]
    assert len(times) == len(expected_candles(traded, 60)) < 60 * 5
    assert times == sorted(times)
    assert all(time % 60_000 == 0 for time in times)


def test_the_default_is_the_last_200_minutes(environment: Environment, traded: list[Trade]) -> None:
    body = candles(environment).json()
    every = expected_candles(traded, 60)
    last = every[-1]["time"]
    assert body["results"] == [c for c in every if c["time"] > last - 200 * 60_000]
    assert len(body["results"]) < len(every)
    assert body["next"] is not None


def walk(environment: Environment, query: str) -> list[dict[str, Any]]:
    """Every page from ``query`` on, following ``next``; candles oldest first."""
    pages = []
    url: str | None = f"/api/environments/{environment.id}/candles{query}"
    while url is not None:
        body = Client().get(url).json()
        assert len(body["results"]) > 0
        pages.append(body["results"])
        url = body["next"]
    return [candle for page in reversed(pages) for candle in page]


@pytest.mark.parametrize(("interval", "limit"), [("1m", 1), ("1m", 2), ("5m", 3), ("1h", 1)])
def test_next_pages_back_through_every_candle(
    environment: Environment, traded: list[Trade], interval: str, limit: int
) -> None:
    query = f"?interval={interval}&limit={limit}"
    assert walk(environment, query) == expected_candles(traded, INTERVALS[interval])
    first = candles(environment, query).json()
    assert len(first["results"]) <= limit


def test_before_is_exclusive(environment: Environment, traded: list[Trade]) -> None:
    every = expected_candles(traded, 300)
    pivot = every[3]["time"]
    before = candles(environment, f"?interval=5m&before={pivot}&limit=1000").json()
    assert before["results"] == every[:3]
    assert before["next"] is None
    including = candles(environment, f"?interval=5m&before={pivot + 1}&limit=1000").json()
    assert including["results"] == every[:4]
    assert candles(environment, "?before=0").json() == {"results": [], "next": None}


def test_limit_counts_intervals_and_next_skips_to_older_candles(
    environment: Environment, traded: list[Trade]
) -> None:
    every = expected_candles(traded, 60)
    newest = candles(environment, "?limit=5").json()
    # The last five minutes (04:06 to 04:10) hold one candle; next skips the quiet hours.
    assert newest["results"] == every[-1:]
    older = Client().get(newest["next"]).json()
    assert older["results"][-1] == every[-2]


def test_no_trades_no_candles(environment: Environment) -> None:
    assert candles(environment).json() == {"results": [], "next": None}
    assert candles(environment, "?interval=1d&before=1700000000000").json()["results"] == []


def test_a_new_round_starts_a_new_chart_and_the_old_one_stays_readable(
    environment: Environment, traded: list[Trade], monkeypatch: pytest.MonkeyPatch
) -> None:
    Environment.objects.filter(pk=environment.pk).update(round=2)
    Position.objects.filter(environment=environment).update(last_traded_at=None)
    assert candles(environment).json() == {"results": [], "next": None}
    clock = Clock(monkeypatch, BASE + timedelta(days=1))
    again = trade_at(clock, clock.moment, environment.id, wallet("Carol"), SOL, is_buy=True)
    assert candles(environment).json()["results"] == expected_candles([again], 60)
    assert candles(environment, "?round=2").json()["results"] == expected_candles([again], 60)
    old = candles(environment, "?round=1&interval=1h&limit=1").json()
    assert old["results"] == expected_candles(traded, 3600)[-1:]
    assert "round=1" in old["next"]
    assert walk(environment, "?round=1&interval=1h&limit=1") == expected_candles(traded, 3600)


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("?interval=2m", "interval", "interval must be one of 1m, 5m, 15m, 1h, 4h, 1d"),
        ("?interval=1M", "interval", "interval must be one of"),
        ("?limit=0", "limit", ""),
        ("?limit=1001", "limit", "1000"),
        ("?limit=ten", "limit", ""),
        ("?before=-1", "before", ""),
        ("?before=soon", "before", ""),
        ("?before=99999999999999999999", "before", ""),
        ("?round=0", "round", ""),
    ],
)
def test_bad_queries_are_invalid_message(
    environment: Environment, query: str, field: str, words: str
) -> None:
    response = candles(environment, query)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "INVALID_MESSAGE"
    assert field in body["details"]
    assert words in " ".join(body["details"][field])


def test_a_round_not_played_yet_is_invalid(environment: Environment) -> None:
    response = candles(environment, "?round=2")
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_MESSAGE"
    assert response.json()["message"] == "round must be between 1 and 1, the current round"


def test_candles_of_an_unknown_environment_are_not_found(db: None) -> None:
    response = Client().get("/api/environments/env_doesnotexist/candles")
    assert response.status_code == 404
    assert response.json()["code"] == "ENVIRONMENT_NOT_FOUND"


@pytest.mark.parametrize("interval", list(INTERVALS))
def test_the_latest_before_is_accepted(
    environment: Environment, traded: list[Trade], interval: str
) -> None:
    response = candles(environment, f"?interval={interval}&before=253370764800000&limit=1000")
    assert response.status_code == 200
    assert response.json()["results"] == expected_candles(traded, INTERVALS[interval])
    assert candles(environment, "?before=253370764800001").status_code == 400


def test_the_limit_of_1000_is_accepted(environment: Environment, traded: list[Trade]) -> None:
    response = candles(environment, "?interval=1d&limit=1000")
    assert response.status_code == 200
    assert response.json()["results"] == expected_candles(traded, 86_400)
