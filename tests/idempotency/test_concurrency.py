"""Copies of one request at the same moment, on PostgreSQL with real threads: one runs.

The receipt's unique key decides: the second insert waits for the first transaction, then
fails if it committed (the copy is answered with the stored result) or goes on if it rolled back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from environments.models import Environment
from environments.services import environment_create, environment_join
from idempotency.models import Receipt
from idempotency.services import Replay
from protocol.errors import DomainError, ErrorCode
from trading import services as trading_services
from trading.models import Trade
from trading.services import trade_execute

pytestmark = pytest.mark.django_db(transaction=True)
WALLET = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM"


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(index)`` on ``count`` threads started together; return results or errors."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as exc:  # the test inspects it
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def buy(environment: Environment) -> Callable[[int], Any]:
    def work(_index: int) -> Any:
        return trade_execute(
            environment_id=environment.id,
            wallet=WALLET,
            amount=10**9,
            is_buy=True,
            request_id="same",
        )

    return work


def test_the_same_trade_sent_four_times_at_once_runs_once(postgres, environment):
    environment_join(environment_id=environment.id, wallet=WALLET)
    results = in_threads(4, buy(environment))
    executed = [result for result in results if isinstance(result, trading_services.TradeResult)]
    replays = [result for result in results if isinstance(result, Replay)]
    assert len(executed) == 1 and len(replays) == 3, results
    trade = Trade.objects.get()
    assert executed[0].trade.pk == trade.pk
    assert {replay.answer["trade"]["id"] for replay in replays} == {str(trade.pk)}
    assert Environment.objects.get(pk=environment.pk).sequence == 1
    assert Receipt.objects.count() == 1


def test_a_copy_waits_for_the_first_and_is_answered_once_it_commits(
    postgres, environment, monkeypatch
):
    environment_join(environment_id=environment.id, wallet=WALLET)
    first_inside = threading.Event()
    original = trading_services._lock

    def slow_lock(environment_id: str, wallet: str) -> Any:
        if not first_inside.is_set():
            first_inside.set()  # the receipt is inserted, not yet committed
            threading.Event().wait(0.5)
        return original(environment_id, wallet)

    monkeypatch.setattr(trading_services, "_lock", slow_lock)

    def work(index: int) -> Any:
        if index == 1:
            assert first_inside.wait(10)
        return buy(environment)(index)

    first, second = in_threads(2, work)
    assert isinstance(first, trading_services.TradeResult), first
    assert isinstance(second, Replay), second
    assert second.answer["trade"]["id"] == str(first.trade.pk)
    assert Trade.objects.count() == 1


def test_a_copy_runs_when_the_first_is_refused_meanwhile(postgres, environment, monkeypatch):
    environment_join(environment_id=environment.id, wallet=WALLET)
    first_inside = threading.Event()
    original = trading_services._lock

    def failing_once(environment_id: str, wallet: str) -> Any:
        if not first_inside.is_set():
            first_inside.set()
            threading.Event().wait(0.5)
            raise DomainError(ErrorCode.ENVIRONMENT_CLOSED, "trading is closed")
        return original(environment_id, wallet)

    monkeypatch.setattr(trading_services, "_lock", failing_once)

    def work(index: int) -> Any:
        if index == 1:
            assert first_inside.wait(10)
        return buy(environment)(index)

    first, second = in_threads(2, work)
    assert isinstance(first, DomainError), first
    assert isinstance(second, trading_services.TradeResult), second
    assert Trade.objects.count() == 1
    assert Receipt.objects.count() == 1


def test_the_same_launch_sent_at_once_launches_once(postgres):
    def work(_index: int) -> Any:
        return environment_create(name="Moon", launched_by=WALLET, request_id="launch")

    results = in_threads(4, work)
    created = [result for result in results if isinstance(result, Environment)]
    assert len(created) == 1, results
    assert all(
        isinstance(result, Replay) and result.answer == {"id": created[0].id}
        for result in results
        if result is not created[0]
    )
    assert Environment.objects.count() == 1
