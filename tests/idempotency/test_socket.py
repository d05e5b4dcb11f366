"""Idempotent requests over the socket: a repeated requestId is answered, never run twice."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.management import call_command
from django.utils import timezone

from environments.models import ChatMessage, Environment
from environments.services import environment_create, environment_join
from idempotency.models import Receipt
from rewards.models import Claim
from rewards.services import settle_rewards
from tests.conftest import Wallet, open_socket
from trading.models import Trade
from trading.services import trade_execute

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def ask(socket: WebsocketCommunicator, frame: dict[str, Any]) -> dict[str, Any]:
    await socket.send_to(text_data=json.dumps(frame))
    return await receive(socket)


async def receive(socket: WebsocketCommunicator) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await socket.receive_from(timeout=5))
    return message


async def joined(wallet: Wallet, environment: Environment) -> WebsocketCommunicator:
    socket = await open_socket(wallet)
    join = {
        "type": "JOIN_ENVIRONMENT",
        "data": {"environmentId": environment.id, "userId": wallet.address},
    }
    assert (await ask(socket, join))["type"] == "ENVIRONMENT_STATE"
    return socket


def buy(environment: Environment, amount: str = "1000000000", request_id: str = "t1") -> dict:
    return {
        "type": "VIRTUAL_TRADE",
        "requestId": request_id,
        "data": {"environmentId": environment.id, "amount": amount, "isBuy": True},
    }


def chat(environment: Environment, message: str, request_id: str = "c1") -> dict:
    return {
        "type": "CHAT_MESSAGE",
        "requestId": request_id,
        "data": {"environmentId": environment.id, "message": message},
    }


async def test_a_repeated_trade_is_answered_with_its_first_own_copy_and_not_run(
    alice, bob, environment
):
    trader = await joined(alice, environment)
    watcher = await joined(bob, environment)
    first = await ask(trader, buy(environment))
    assert first["type"] == "VIRTUAL_TRADE_EXECUTED"
    assert "replay" not in first["data"]
    assert (await receive(watcher))["data"]["sequence"] == 1
    # Another trade moves the balance on; the replay still shows the balance as it was.
    later = await ask(trader, buy(environment, request_id="t2"))
    assert later["data"]["balance"] != first["data"]["balance"]
    assert (await receive(watcher))["data"]["sequence"] == 2

    again = await ask(trader, buy(environment))
    assert again["type"] == "VIRTUAL_TRADE_EXECUTED"
    assert again["requestId"] == "t1"
    assert again["data"] == {**first["data"], "replay": True}
    assert await Trade.objects.acount() == 2
    environment = await Environment.objects.aget(pk=environment.pk)
    assert environment.sequence == 2  # the replay took no sequence number
    assert await watcher.receive_nothing(timeout=0.3)  # and was not broadcast
    await trader.disconnect()
    await watcher.disconnect()


async def test_the_replay_reaches_another_connection_of_the_same_wallet(alice, environment):
    first_socket = await joined(alice, environment)
    first = await ask(first_socket, buy(environment))
    await first_socket.disconnect()
    second_socket = await joined(alice, environment)
    again = await ask(second_socket, buy(environment))
    assert again["data"]["trade"]["id"] == first["data"]["trade"]["id"]
    assert again["data"]["replay"] is True
    assert await Trade.objects.acount() == 1
    await second_socket.disconnect()


async def test_a_request_id_reused_for_another_request_is_invalid_and_runs_nothing(
    alice, environment
):
    socket = await joined(alice, environment)
    assert (await ask(socket, buy(environment)))["type"] == "VIRTUAL_TRADE_EXECUTED"
    for frame in (
        buy(environment, amount="2000000000"),  # other parameters
        chat(environment, "gm", request_id="t1"),  # another message type
    ):
        reply = await ask(socket, frame)
        assert reply["type"] == "ERROR", reply
        assert reply["data"]["code"] == "INVALID_MESSAGE"
        assert reply["data"]["details"]["field"] == "requestId"
        assert reply["requestId"] == "t1"
    assert await Trade.objects.acount() == 1
    assert await ChatMessage.objects.acount() == 0
    await socket.disconnect()


async def test_request_ids_are_per_wallet(alice, bob, environment):
    one = await joined(alice, environment)
    other = await joined(bob, environment)
    assert (await ask(one, buy(environment)))["type"] == "VIRTUAL_TRADE_EXECUTED"
    await receive(other)  # alice's broadcast
    reply = await ask(other, buy(environment))
    assert reply["type"] == "VIRTUAL_TRADE_EXECUTED" and "replay" not in reply["data"]
    assert await Trade.objects.acount() == 2
    await one.disconnect()
    await other.disconnect()


async def test_a_refused_request_leaves_no_receipt_and_its_retry_runs(alice, environment):
    socket = await joined(alice, environment)
    sell = {
        "type": "VIRTUAL_TRADE",
        "requestId": "s1",
        "data": {"environmentId": environment.id, "amount": "1000000000000", "isBuy": False},
    }
    refused = await ask(socket, sell)
    assert refused["data"]["code"] == "INSUFFICIENT_BALANCE"
    assert await Receipt.objects.acount() == 0
    assert (await ask(socket, buy(environment)))["type"] == "VIRTUAL_TRADE_EXECUTED"
    retried = await ask(socket, sell)
    assert retried["type"] == "VIRTUAL_TRADE_EXECUTED"
    assert "replay" not in retried["data"]
    assert await Trade.objects.acount() == 2
    await socket.disconnect()


async def test_a_receipt_older_than_the_window_no_longer_counts(alice, environment, settings):
    settings.FUNPUMP_IDEMPOTENCY_WINDOW = 3600
    socket = await joined(alice, environment)
    first = await ask(socket, buy(environment))
    await Receipt.objects.aupdate(created_at=timezone.now() - timedelta(seconds=3601))
    again = await ask(socket, buy(environment))
    assert "replay" not in again["data"]
    assert again["data"]["trade"]["id"] != first["data"]["trade"]["id"]
    assert await Trade.objects.acount() == 2
    assert await Receipt.objects.acount() == 1  # the stale receipt was replaced
    await socket.disconnect()


async def test_batch_items_sharing_a_request_id_run_each_once(alice, environment):
    socket = await joined(alice, environment)
    item = {"environmentId": environment.id, "amount": "100000000", "isBuy": True}
    batch = {"type": "VIRTUAL_TRADE", "requestId": "b1", "data": [item, item]}
    await socket.send_to(text_data=json.dumps(batch))
    first = [await receive(socket), await receive(socket)]
    assert [reply["data"]["sequence"] for reply in first] == [1, 2]
    await socket.send_to(text_data=json.dumps(batch))  # the whole batch retried
    again = [await receive(socket), await receive(socket)]
    assert [reply["data"] for reply in again] == [{**r["data"], "replay": True} for r in first]
    assert await Trade.objects.acount() == 2
    await socket.disconnect()


async def test_a_repeated_chat_message_is_answered_and_posted_once(alice, bob, environment):
    speaker = await joined(alice, environment)
    listener = await joined(bob, environment)
    first = await ask(speaker, chat(environment, "  gm  "))
    assert first["type"] == "CHAT_MESSAGE" and first["data"]["message"] == "gm"
    assert (await receive(listener))["data"]["id"] == first["data"]["id"]
    again = await ask(speaker, chat(environment, "gm"))  # trimmed, it is the same request
    assert again["type"] == "CHAT_MESSAGE"
    assert again["requestId"] == "c1"
    assert again["data"] == {**first["data"], "replay": True}
    assert await ChatMessage.objects.acount() == 1
    assert await listener.receive_nothing(timeout=0.3)
    await speaker.disconnect()
    await listener.disconnect()


def earn_rewards(wallet: Wallet) -> None:
    room = environment_create(name="Mine", launched_by=wallet.address)
    environment_join(environment_id=room.id, wallet=wallet.address)
    trade_execute(environment_id=room.id, wallet=wallet.address, amount=10**9, is_buy=True)
    settle_rewards(run_by="staff")


async def test_a_repeated_claim_is_answered_with_its_first_reward_update(alice, published_tiers):
    await sync_to_async(earn_rewards)(alice)
    socket = await open_socket(alice)
    claim = {"type": "CLAIM_REWARDS", "requestId": "claim-1", "data": {"userId": alice.address}}
    first = await ask(socket, claim)
    assert first["type"] == "REWARD_UPDATE"
    assert first["data"]["unclaimedRewards"] == "0"
    again = await ask(socket, claim)
    assert again["type"] == "REWARD_UPDATE"
    assert again["requestId"] == "claim-1"
    assert again["data"] == {**first["data"], "replay": True}
    assert await Claim.objects.acount() == 1
    fresh = await ask(socket, {**claim, "requestId": "claim-2"})  # a new claim: nothing left
    assert fresh["data"]["code"] == "INSUFFICIENT_BALANCE"
    await socket.disconnect()


async def test_purge_receipts_deletes_only_those_past_the_window(alice, environment, settings):
    settings.FUNPUMP_IDEMPOTENCY_WINDOW = 3600
    socket = await joined(alice, environment)
    for request_id in ("old-1", "old-2", "new"):
        await ask(socket, buy(environment, amount="1000000", request_id=request_id))
    await socket.disconnect()
    await Receipt.objects.filter(request_id__startswith="old").aupdate(
        created_at=timezone.now() - timedelta(hours=2)
    )
    out = await sync_to_async(run_command)("purge_receipts", "--dry-run")
    assert "2 receipt(s)" in out
    assert await Receipt.objects.acount() == 3
    out = await sync_to_async(run_command)("purge_receipts")
    assert "Deleted 2 receipt(s)" in out
    assert [r async for r in Receipt.objects.values_list("request_id", flat=True)] == ["new"]


def run_command(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()
