"""Live presence (PARTICIPANTS) and a new round reaching joined clients (ROUND_STARTED, then a
fresh ENVIRONMENT_STATE each), in process and across two real server processes."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.utils import timezone
from nacl.signing import SigningKey

from environments import presence
from environments.models import Environment
from environments.rounds import round_start
from environments.services import environment_create
from gateway.client import wallet_of
from tests.conftest import Wallet, open_socket
from tests.e2e.conftest import daphne_server  # noqa: F401 (a fixture)
from tests.e2e.test_room import Recorder, signed_in_client
from trading import curve
from trading.state import Phase

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

STARTING = str(curve.DEFAULT_STARTING_SOL)


async def receive(socket: WebsocketCommunicator) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await socket.receive_from(timeout=5))
    return message


async def joined(wallet: Wallet, environment: Environment) -> WebsocketCommunicator:
    socket = await open_socket(wallet)
    await socket.send_to(
        text_data=json.dumps(
            {
                "type": "JOIN_ENVIRONMENT",
                "data": {"environmentId": environment.id, "userId": wallet.address},
            }
        )
    )
    state = await receive(socket)
    assert state["type"] == "ENVIRONMENT_STATE", state
    return socket


async def buy(socket: WebsocketCommunicator, environment: Environment, amount: int) -> None:
    frame = {"environmentId": environment.id, "amount": str(amount), "isBuy": True}
    await socket.send_to(text_data=json.dumps({"type": "VIRTUAL_TRADE", "data": frame}))


@pytest.fixture
def roll_call(settings: Any) -> None:
    settings.FUNPUMP_PARTICIPANTS_EVERY = 0.1


@pytest.fixture
def no_roll_call(settings: Any) -> None:
    settings.FUNPUMP_PARTICIPANTS_EVERY = 0


# --- a new round while clients are joined -------------------------------------------------------


async def test_a_new_round_sends_round_started_and_a_fresh_state_to_each_member(
    no_roll_call, alice, bob, environment
):
    first = await joined(alice, environment)
    second = await joined(bob, environment)
    await buy(first, environment, curve.LAMPORTS_PER_SOL)
    own = await receive(first)
    assert own["type"] == "VIRTUAL_TRADE_EXECUTED" and own["data"]["sequence"] == 1
    assert (await receive(second))["data"]["sequence"] == 1

    await database_sync_to_async(round_start)(environment_id=environment.id)

    for socket in (first, second):
        started = await receive(socket)
        assert started["type"] == "ROUND_STARTED", started
        assert started["data"]["environmentId"] == environment.id
        assert started["data"]["round"] == 2
        assert started["data"]["sequence"] == 2
        assert isinstance(started["data"]["timestamp"], int)
        state = await receive(socket)
        assert state["type"] == "ENVIRONMENT_STATE", state
        assert state["data"]["round"] == 2
        assert state["data"]["phase"] == "curve"
        assert state["data"]["sequence"] == 2
        assert state["data"]["balance"] == {"sol": STARTING, "token": "0"}
        assert state["data"]["virtualSolReserves"] == str(curve.DEFAULT_VIRTUAL_SOL)

    # Trading goes on in the new round; nothing of the state is sent twice.
    await buy(second, environment, curve.LAMPORTS_PER_SOL)
    own = await receive(second)
    seen = await receive(first)
    assert own["type"] == seen["type"] == "VIRTUAL_TRADE_EXECUTED"
    assert own["data"]["sequence"] == seen["data"]["sequence"] == 3
    for socket in (first, second):
        assert await socket.receive_nothing(timeout=0.2)
        await socket.disconnect()


async def test_a_round_start_missed_by_the_layer_is_read_back_and_still_resets_the_state(
    no_roll_call, redis_url, alice, environment, monkeypatch
):
    from kernel.realtime import publish

    socket = await joined(alice, environment)
    monkeypatch.setattr(publish, "_dispatch", lambda event: None)  # the broadcast is lost
    await database_sync_to_async(round_start)(environment_id=environment.id)
    # The hub finds the later sequence in the database and reads the event back from there.
    started = json.loads(await socket.receive_from(timeout=10))
    assert started["type"] == "ROUND_STARTED"
    assert (started["data"]["round"], started["data"]["sequence"]) == (2, 1)
    state = await receive(socket)
    assert state["type"] == "ENVIRONMENT_STATE"
    assert (state["data"]["round"], state["data"]["sequence"]) == (2, 1)
    await socket.disconnect()


async def test_a_quiet_graduated_room_starts_its_next_round_by_itself(
    no_roll_call, alice, environment, monkeypatch
):
    from gateway import consumers

    monkeypatch.setattr(consumers, "ROUND_CHECK_EVERY", 0.1)
    socket = await joined(alice, environment)
    quiet_since = timezone.now() - timedelta(minutes=11)
    await database_sync_to_async(Environment.objects.filter(pk=environment.pk).update)(
        phase=Phase.POOL,
        real_token_reserves=0,
        graduated_at=quiet_since,
        last_trade_at=quiet_since,
        new_round_after=600,
    )
    started = await receive(socket)
    assert started["type"] == "ROUND_STARTED" and started["data"]["round"] == 2
    state = await receive(socket)
    assert state["type"] == "ENVIRONMENT_STATE"
    assert (state["data"]["phase"], state["data"]["round"]) == ("curve", 2)
    assert await socket.receive_nothing(timeout=0.3)  # once: the next check finds it not due
    await socket.disconnect()


async def test_price_subscribers_see_the_price_go_back_to_the_start(
    no_roll_call, alice, environment
):
    socket = await joined(alice, environment)
    await socket.send_to(
        text_data=json.dumps(
            {
                "type": "SUBSCRIBE_PRICE",
                "data": {"mintAddress": environment.token_mint, "environmentId": environment.id},
            }
        )
    )
    first = await receive(socket)
    assert first["type"] == "PRICE_UPDATE"
    await buy(socket, environment, 5 * curve.LAMPORTS_PER_SOL)
    frames = [await receive(socket), await receive(socket)]
    moved = next(frame for frame in frames if frame["type"] == "PRICE_UPDATE")
    assert moved["data"]["price"] != first["data"]["price"]

    await database_sync_to_async(round_start)(environment_id=environment.id)
    frames = [await receive(socket) for _ in range(3)]
    assert sorted(frame["type"] for frame in frames) == [
        "ENVIRONMENT_STATE",
        "PRICE_UPDATE",
        "ROUND_STARTED",
    ]
    back = next(frame for frame in frames if frame["type"] == "PRICE_UPDATE")
    assert back["data"]["price"] == first["data"]["price"]
    await socket.disconnect()


# --- PARTICIPANTS ---------------------------------------------------------------------------------


async def test_members_see_the_count_change_and_only_when_it_changes(
    roll_call, alice, bob, environment
):
    first = await joined(alice, environment)
    second = await joined(bob, environment)  # its state says 2 already

    update = await receive(first)
    assert update == {
        "type": "PARTICIPANTS",
        "data": {"environmentId": environment.id, "participants": 2},
    }
    assert await second.receive_nothing(timeout=0.3)  # it knew
    assert await first.receive_nothing(timeout=0.3)  # told once

    await second.disconnect()
    update = await receive(first)
    assert update["type"] == "PARTICIPANTS"
    assert update["data"]["participants"] == 1
    await first.disconnect()


async def test_a_second_tab_of_the_same_wallet_changes_nothing(roll_call, alice, environment):
    first = await joined(alice, environment)
    second = await joined(alice, environment)
    assert await first.receive_nothing(timeout=0.3)
    await second.disconnect()
    assert await first.receive_nothing(timeout=0.3)
    await first.disconnect()


async def test_counts_changed_by_another_process_arrive(roll_call, redis_url, alice, environment):
    first = await joined(alice, environment)
    # Another server process, sharing the presence entries through Redis.
    elsewhere = presence.RedisPresence(redis_url, settings.FUNPUMP_REDIS_PREFIX)
    carol, connection = Wallet().address, f"other-{uuid.uuid4().hex}.1"
    await asyncio.to_thread(elsewhere.add, environment.id, connection, carol)

    update = await receive(first)
    assert update["data"] == {"environmentId": environment.id, "participants": 2}

    await asyncio.to_thread(elsewhere.remove, environment.id, connection, carol)
    update = await receive(first)
    assert update["data"]["participants"] == 1
    await first.disconnect()


# --- across two real server processes -------------------------------------------------------------


@pytest.mark.redis
async def test_presence_and_a_new_round_across_two_server_processes(
    postgres,
    redis_url,
    daphne_server,  # noqa: F811
):
    environment = await database_sync_to_async(environment_create)(name="Two processes")
    one = await database_sync_to_async(daphne_server)(FUNPUMP_PARTICIPANTS_EVERY="0.2")
    two = await database_sync_to_async(daphne_server)(FUNPUMP_PARTICIPANTS_EVERY="0.2")
    alice_key, bob_key = SigningKey.generate(), SigningKey.generate()
    alice = await signed_in_client(one, alice_key)
    bob = await signed_in_client(two, bob_key)
    alice_seen, bob_seen = Recorder(alice), Recorder(bob)
    try:
        state = await alice.join(environment.id, wallet_of(alice_key))
        assert state["data"]["participants"] == 1
        state = await bob.join(environment.id, wallet_of(bob_key))
        assert state["data"]["participants"] == 2

        # Alice's process hears of Bob, who joined through the other process.
        await alice_seen.wait_for(1, "PARTICIPANTS")
        assert alice_seen.of_type("PARTICIPANTS")[-1]["data"]["participants"] == 2

        # An operator starts a new round from a third process (the command's).
        await database_sync_to_async(round_start)(environment_id=environment.id)
        for seen in (alice_seen, bob_seen):
            await seen.wait_for(1, "ROUND_STARTED")
            await seen.wait_for(2, "ENVIRONMENT_STATE")
            kinds = [m["type"] for m in seen.messages if m["type"] != "PARTICIPANTS"]
            assert kinds[-2:] == ["ROUND_STARTED", "ENVIRONMENT_STATE"]
            fresh = seen.of_type("ENVIRONMENT_STATE")[-1]["data"]
            assert (fresh["round"], fresh["sequence"]) == (2, 1)
            assert fresh["balance"] == {"sol": STARTING, "token": "0"}

        await bob.close()
        await alice_seen.wait_for(2, "PARTICIPANTS")
        assert alice_seen.of_type("PARTICIPANTS")[-1]["data"]["participants"] == 1
    finally:
        await alice.close()
        await bob.close()
