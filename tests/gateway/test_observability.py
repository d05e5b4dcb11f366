"""Metrics at /metrics and structured log records for socket traffic."""

from __future__ import annotations

import json
import logging
import re

import pytest
from django.test import AsyncClient

from tests.conftest import open_socket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def test_metrics_are_hidden_in_production_and_served_with_the_token(settings, alice):
    settings.DEBUG = False
    settings.FUNPUMP_METRICS_TOKEN = "scrape-me"
    socket = await open_socket(alice)
    await socket.send_to(text_data=json.dumps({"type": "NOPE"}))
    await socket.receive_from()
    await socket.send_to(text_data=json.dumps({"type": "HEARTBEAT"}))
    await socket.receive_from()

    client = AsyncClient()
    assert (await client.get("/metrics")).status_code == 404
    denied = await client.get("/metrics", headers={"authorization": "Bearer wrong"})
    assert denied.status_code == 404
    response = await client.get("/metrics", headers={"authorization": "Bearer scrape-me"})
    assert response.status_code == 200
    text = response.content.decode()
    assert 'funpump_errors_total{code="INVALID_MESSAGE"}' in text
    assert 'funpump_messages_total{type="HEARTBEAT"}' in text
    assert re.search(r"^funpump_connections [1-9]", text, re.MULTILINE)
    assert "funpump_trade_seconds_bucket" in text
    await socket.disconnect()


async def test_trades_and_errors_are_logged_with_their_context(alice, environment, caplog):
    socket = await open_socket(alice)
    join = {"environmentId": environment.id, "userId": alice.address}
    await socket.send_to(text_data=json.dumps({"type": "JOIN_ENVIRONMENT", "data": join}))
    await socket.receive_from()
    trade = {"environmentId": environment.id, "amount": "1000000000", "isBuy": True}
    with caplog.at_level(logging.INFO, logger="gateway.consumers"):
        await socket.send_to(
            text_data=json.dumps({"type": "VIRTUAL_TRADE", "requestId": "t9", "data": trade})
        )
        await socket.receive_from()
        too_much = {**trade, "amount": "999999999999999"}
        await socket.send_to(text_data=json.dumps({"type": "VIRTUAL_TRADE", "data": too_much}))
        await socket.receive_from()
    records = [record for record in caplog.records if record.getMessage() == "VIRTUAL_TRADE"]
    done, refused = records
    assert done.event == "handled"
    assert done.wallet == alice.address
    assert done.environment == environment.id
    assert done.requestId == "t9"
    assert done.latencyMs > 0
    assert refused.event == "refused"
    assert refused.code == "INSUFFICIENT_BALANCE"
    await socket.disconnect()
