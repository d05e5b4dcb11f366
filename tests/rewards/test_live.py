"""Rewards over the socket and HTTP: subscribe, live pushes, claims."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from environments.services import environment_create, environment_join
from rewards.models import Claim, RewardAccount
from rewards.services import settle_rewards
from tests.conftest import Wallet, open_socket
from trading.services import trade_execute

pytestmark = pytest.mark.django_db(transaction=True)


async def ask(socket, frame) -> dict:
    await socket.send_to(text_data=json.dumps(frame))
    return json.loads(await socket.receive_from(timeout=5))


def trade(wallet: Wallet, environment) -> None:
    environment_join(environment_id=environment.id, wallet=wallet.address)
    trade_execute(environment_id=environment.id, wallet=wallet.address, amount=10**9, is_buy=True)


async def test_subscribe_then_pushes_after_a_trade_and_a_settlement(alice, published_tiers):
    socket = await open_socket(alice)
    first = await ask(socket, {"type": "SUBSCRIBE_REWARDS", "data": {"userId": alice.address}})
    assert first["type"] == "REWARD_UPDATE"
    assert first["data"] == {
        "tier": "BRONZE",
        "unclaimedRewards": "0",
        "totalLaunches": 0,
        "totalVolume": "0",
    }
    room = await sync_to_async(environment_create)(name="Mine", launched_by=alice.address)
    launched = json.loads(await socket.receive_from(timeout=2))
    assert launched["data"]["totalLaunches"] == 1
    await sync_to_async(trade)(alice, room)
    traded = json.loads(await socket.receive_from(timeout=2))
    assert traded["data"]["totalVolume"] == "987654320"
    await sync_to_async(settle_rewards)(run_by="staff")
    settled = json.loads(await socket.receive_from(timeout=2))
    # Alice launched the room and traded in it: creator fee plus a BRONZE rebate.
    assert settled["data"]["unclaimedRewards"] == str(2_962_963 + 9_382_717 * 500 // 10_000)
    await socket.disconnect()


async def test_claims_move_the_rewards_once_and_nothing_is_a_clear_error(alice, published_tiers):
    room = await sync_to_async(environment_create)(name="Mine", launched_by=alice.address)
    await sync_to_async(trade)(alice, room)
    await sync_to_async(settle_rewards)(run_by="staff")
    socket = await open_socket(alice)
    claim = {"type": "CLAIM_REWARDS", "requestId": "c", "data": {"userId": alice.address}}
    reply = await ask(socket, claim)
    assert reply["type"] == "REWARD_UPDATE"
    assert reply["requestId"] == "c"
    assert reply["data"]["unclaimedRewards"] == "0"
    record = await Claim.objects.aget(wallet=alice.address)
    account = await RewardAccount.objects.aget(wallet=alice.address)
    assert record.amount == account.claimed > 0
    again = await ask(socket, {**claim, "requestId": "c2"})  # a new claim (same id: a replay)
    assert again["data"]["code"] == "INSUFFICIENT_BALANCE"
    assert await Claim.objects.acount() == 1
    await socket.disconnect()


async def test_only_the_own_wallet(alice, bob):
    socket = await open_socket(alice)
    for message_type in ("SUBSCRIBE_REWARDS", "CLAIM_REWARDS"):
        reply = await ask(socket, {"type": message_type, "data": {"userId": bob.address}})
        assert reply["data"]["code"] == "UNAUTHORIZED"
    anonymous = await open_socket()
    reply = await ask(anonymous, {"type": "SUBSCRIBE_REWARDS", "data": {"userId": bob.address}})
    assert reply["data"]["code"] == "UNAUTHORIZED"
    await socket.disconnect()
    await anonymous.disconnect()


def test_my_rewards_over_http(alice, published_tiers):
    room = environment_create(name="Mine", launched_by=alice.address)
    trade(alice, room)
    settle_rewards(run_by="staff")
    client = Client()
    assert client.get("/api/rewards/me").status_code in (401, 403)
    response = client.get("/api/rewards/me", headers={"authorization": f"Bearer {alice.token}"})
    assert response.status_code == 200
    body = response.json()
    assert body["tier"] == "BRONZE"
    assert body["totalLaunches"] == 1
    assert {entry["kind"] for entry in body["entries"]} == {"creator_fee", "trader_rebate"}
    assert int(body["unclaimedRewards"]) == sum(int(entry["amount"]) for entry in body["entries"])
