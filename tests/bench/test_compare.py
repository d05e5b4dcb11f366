"""The benchmark's own arithmetic: its table of medians and ratios, and its ledger check."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from django.db import connection

from environments.models import Environment
from tests.conftest import WALLET_A, WALLET_B, buy, join
from trading.models import Trade

COMPARE = Path(__file__).resolve().parents[2] / "bench" / "compare.py"


@pytest.fixture(scope="module")
def compare() -> ModuleType:
    """bench/compare.py is a script, not a package: load it by its path."""
    spec = importlib.util.spec_from_file_location("bench_compare", COMPARE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def result(**figures: Any) -> dict[str, Any]:
    return {"cpu_per_op_us": 100.0, "stores_per_op_us": 0.0, "foreign": 0.1, **figures}


def test_table_gives_medians_and_the_median_of_the_pairs_ratios(compare: ModuleType) -> None:
    pairs = [
        (result(cpu_per_op_us=300.0, rate=10.0), result(cpu_per_op_us=100.0, rate=20.0)),
        (result(cpu_per_op_us=200.0, rate=30.0), result(cpu_per_op_us=100.0, rate=30.0)),
        (result(cpu_per_op_us=900.0, rate=20.0), result(cpu_per_op_us=100.0, rate=10.0)),
    ]
    text = compare.table({"heartbeat:10": pairs}, processes=1)
    [cpu_row] = [line for line in text.splitlines() if "server CPU per message" in line]
    # Medians 300 and 100; ratios 3, 2, 9 have the median 3.
    assert cpu_row.startswith("| HEARTBEAT, 10 connections: server CPU per message | 300 µs |")
    assert "| 100 µs | 3.00\N{MULTIPLICATION SIGN} | 300 µs / 100 µs |" in cpu_row
    [rate_row] = [line for line in text.splitlines() if "messages/s" in line]
    assert "| 20 /s | 20 /s | 1.00\N{MULTIPLICATION SIGN} |" in rate_row  # ratios 0.5, 1 and 2


def database_url() -> str:
    config = connection.settings_dict
    return (
        f"postgres://{config['USER']}:{config['PASSWORD'] or ''}@{config['HOST']}:"
        f"{config['PORT'] or 5432}/{config['NAME']}"
    )


@pytest.mark.django_db(transaction=True)  # the check reads through a connection of its own
def test_ledger_passes_real_trades_and_catches_a_lost_one(
    compare: ModuleType, postgres: None, environment: Environment
) -> None:
    join(environment, WALLET_A, WALLET_B)
    buy(environment, WALLET_A, 10**9)
    buy(environment, WALLET_B, 2 * 10**9)

    assert asyncio.run(compare.ledger(database_url(), {environment.id: 2})) == []
    # An acknowledgement the books do not show, and SOL that appears from nowhere.
    problems = asyncio.run(compare.ledger(database_url(), {environment.id: 3}))
    assert problems == [f"{environment.id}: 2 trades, sequence 2, 3 acknowledged"]
    Trade.objects.filter(environment=environment).update(protocol_fee=0)
    problems = asyncio.run(compare.ledger(database_url(), {environment.id: 2}))
    assert problems == [f"{environment.id}: SOL not conserved"]
