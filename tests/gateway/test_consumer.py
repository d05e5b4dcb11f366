"""The /ws gateway through the full ASGI app: every message type and error code."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

import protocol
from environments.models import ChatMessage, Environment, Position
from funpump.asgi import application
from tests.conftest import ORIGIN, Wallet, open_socket
from trading.models import Trade

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def ask(socket: WebsocketCommunicator, frame: Any) -> dict[str, Any]:
    await socket.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))
    return await receive(socket)


async def receive(socket: WebsocketCommunicator) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await socket.receive_from(timeout=5))
    return message


async def joined(wallet: Wallet, environment: Environment) -> WebsocketCommunicator:
    socket = await open_socket(wallet)
    state = await ask(
        socket,
        {
            "type": "JOIN_ENVIRONMENT",
            "data": {"environmentId": environment.id, "userId": wallet.address},
        },
    )
    assert state["type"] == "ENVIRONMENT_STATE", state
    return socket


def join_frame(environment: Environment, wallet: Wallet) -> dict:
    return {
        "type": "JOIN_ENVIRONMENT",
        "data": {"environmentId": environment.id, "userId": wallet.address},
    }


def trade(environment: Environment, amount: Any, is_buy: bool = True, **extra: Any) -> dict:
    data = {"environmentId": environment.id, "amount": amount, "isBuy": is_buy, **extra}
    return {"type": "VIRTUAL_TRADE", "data": data}


def assert_error(message: dict[str, Any], code: str) -> None:
    assert message["type"] == "ERROR", message
    assert message["data"]["code"] == code, message
    assert isinstance(message["data"]["message"], str)
    assert "Traceback" not in json.dumps(message)


def database_snapshot() -> tuple:
    return (
        list(Environment.objects.values_list("pk", "virtual_sol_reserves", "sequence")),
        list(Position.objects.values_list("pk", "sol_balance", "token_balance")),
        Trade.objects.count(),
        ChatMessage.objects.count(),
    )


# --- heartbeat and envelope -------------------------------------------------------------------


async def test_anonymous_heartbeat_answers_with_the_server_clock_and_request_id():
    socket = await open_socket()
    reply = await ask(socket, {"type": "HEARTBEAT", "requestId": "hb-1"})
    assert reply["type"] == "HEARTBEAT"
    assert isinstance(reply["data"]["timestamp"], int)
    assert reply["data"]["timestamp"] > 1_700_000_000_000
    assert reply["requestId"] == "hb-1"
    await socket.disconnect()


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ("{not json", None),
        ("[1, 2]", None),
        ('"HEARTBEAT"', None),
        ("[" * 100_000, None),
        (json.dumps({"data": {}}), "type"),
        (json.dumps({"type": 7}), "type"),
        (json.dumps({"type": "LAUNCH_MISSILES"}), "type"),
        (json.dumps({"type": "HEARTBEAT", "requestId": ""}), "requestId"),
        (json.dumps({"type": "HEARTBEAT", "requestId": "x" * 65}), "requestId"),
        (json.dumps({"type": "HEARTBEAT", "requestId": 5}), "requestId"),
    ],
)
async def test_malformed_frames_get_invalid_message_and_the_socket_stays_open(frame, field):
    socket = await open_socket()
    reply = await ask(socket, frame)
    assert_error(reply, "INVALID_MESSAGE")
    if field:
        assert reply["data"]["details"]["field"] == field
    assert (await ask(socket, {"type": "HEARTBEAT"}))["type"] == "HEARTBEAT"
    await socket.disconnect()


async def test_unknown_type_keeps_the_request_id():
    socket = await open_socket()
    reply = await ask(socket, {"type": "NOPE", "requestId": "abc"})
    assert_error(reply, "INVALID_MESSAGE")
    assert reply["requestId"] == "abc"
    await socket.disconnect()


async def test_binary_frame_outside_a_voice_session_is_invalid():
    socket = await open_socket()
    await socket.send_to(bytes_data=b"\x00\x01" * 100)
    assert_error(await receive(socket), "INVALID_MESSAGE")
    await socket.disconnect()


# --- handshake --------------------------------------------------------------------------------


async def test_a_foreign_origin_is_refused_at_the_handshake(alice):
    headers = [(b"origin", b"https://evil.example"), *alice.headers()[1:]]
    communicator = WebsocketCommunicator(application, "/ws", headers=headers)
    connected, _ = await communicator.connect()
    assert not connected


async def test_a_bad_or_forged_token_is_refused_at_the_handshake():
    for token in (b"Bearer nonsense", b"Bearer " + b"a" * 600, b"Basic abc"):
        headers = [ORIGIN, (b"authorization", token)]
        communicator = WebsocketCommunicator(application, "/ws", headers=headers)
        connected, _ = await communicator.connect()
        assert not connected, token


async def session_cookie(wallet: Wallet) -> tuple[bytes, bytes]:
    """The ``cookie`` header of a browser whose session signed ``wallet`` in."""
    from asgiref.sync import sync_to_async

    def login() -> str:
        client = Client()
        client.force_login(get_user_model().objects.create(username=wallet.address))
        return client.cookies["sessionid"].value

    return (b"cookie", f"sessionid={await sync_to_async(login)()}".encode())


async def test_the_session_cookie_authenticates_the_socket(alice, environment):
    socket = await open_socket(headers=[ORIGIN, await session_cookie(alice)])
    assert (await ask(socket, join_frame(environment, alice)))["type"] == "ENVIRONMENT_STATE"
    await socket.disconnect()


async def test_a_session_cookie_that_signs_nobody_in_leaves_the_socket_anonymous(
    alice, environment
):
    socket = await open_socket(headers=[ORIGIN, (b"cookie", b"sessionid=not-a-session; a=1")])
    reply = await ask(socket, join_frame(environment, alice))
    assert reply["type"] == "ERROR"
    assert reply["data"]["code"] == "UNAUTHORIZED"
    await socket.disconnect()


async def test_a_bearer_token_names_the_wallet_whatever_the_cookie_says(alice, bob, environment):
    socket = await open_socket(headers=[*alice.headers(), await session_cookie(bob)])
    assert (await ask(socket, join_frame(environment, alice)))["type"] == "ENVIRONMENT_STATE"
    refused = await ask(socket, join_frame(environment, bob))
    assert refused["data"]["code"] == "UNAUTHORIZED"
    await socket.disconnect()


async def test_only_ws_is_a_websocket_endpoint(alice):
    for path in ("/", "/wss", "/ws/", "/api/ws"):
        communicator = WebsocketCommunicator(application, path, headers=alice.headers())
        connected, _ = await communicator.connect()
        assert not connected, path
        await communicator.wait()


# --- joining ----------------------------------------------------------------------------------


async def test_join_returns_the_full_environment_state(alice, environment):
    socket = await open_socket(alice)
    reply = await ask(
        socket,
        {
            "type": "JOIN_ENVIRONMENT",
            "requestId": "j1",
            "data": {"environmentId": environment.id, "userId": alice.address},
        },
    )
    assert reply["type"] == "ENVIRONMENT_STATE"
    assert reply["requestId"] == "j1"
    state = reply["data"]
    protocol.EnvironmentState.model_validate(state)
    assert state["id"] == environment.id
    assert state["name"] == "Test launch"
    assert state["tokenMint"] == environment.token_mint
    assert state["virtualSolReserves"] == "30000000000"
    assert state["virtualTokenReserves"] == "1073000000000000"
    assert state["realSolReserves"] == "0"
    assert state["realTokenReserves"] == "793100000000000"
    assert state["participants"] == 1
    assert state["chatHistory"] == []
    assert state["trades"] == []
    assert state["complete"] is False
    assert state["price"] == "0.000000027958993476234855545"
    assert state["marketCap"] == "27958993476"
    assert state["sequence"] == 0
    assert state["fees"] == {"protocolBps": 95, "creatorBps": 30}
    assert state["balance"] == {"sol": "100000000000", "token": "0"}

    again = await ask(
        socket,
        {
            "type": "JOIN_ENVIRONMENT",
            "data": {"environmentId": environment.id, "userId": alice.address},
        },
    )
    assert again["type"] == "ENVIRONMENT_STATE"
    assert again["data"]["participants"] == 1
    assert await Position.objects.filter(wallet=alice.address).acount() == 1
    await socket.disconnect()


async def test_participants_count_distinct_wallets(alice, bob, environment):
    first = await joined(alice, environment)
    second = await joined(alice, environment)  # a second tab of the same wallet
    third = await open_socket(bob)
    state = await ask(
        third,
        {
            "type": "JOIN_ENVIRONMENT",
            "data": {"environmentId": environment.id, "userId": bob.address},
        },
    )
    assert state["data"]["participants"] == 2
    await first.disconnect()
    await second.disconnect()
    again = await ask(
        third,
        {
            "type": "JOIN_ENVIRONMENT",
            "data": {"environmentId": environment.id, "userId": bob.address},
        },
    )
    assert again["data"]["participants"] == 1
    await third.disconnect()


async def test_join_errors(alice, bob, environment):
    anonymous = await open_socket()
    join = {"environmentId": environment.id, "userId": alice.address}
    assert_error(await ask(anonymous, {"type": "JOIN_ENVIRONMENT", "data": join}), "UNAUTHORIZED")
    await anonymous.disconnect()

    socket = await open_socket(alice)
    as_bob = {"environmentId": environment.id, "userId": bob.address}
    assert_error(await ask(socket, {"type": "JOIN_ENVIRONMENT", "data": as_bob}), "UNAUTHORIZED")
    unknown = {"environmentId": "env_missing", "userId": alice.address}
    reply = await ask(socket, {"type": "JOIN_ENVIRONMENT", "data": unknown})
    assert_error(reply, "ENVIRONMENT_NOT_FOUND")
    bad_wallet = {"environmentId": environment.id, "userId": "not-a-wallet"}
    reply = await ask(socket, {"type": "JOIN_ENVIRONMENT", "data": bad_wallet})
    assert_error(reply, "INVALID_MESSAGE")
    assert reply["data"]["details"]["errors"][0]["field"] == "userId"
    # Shape problems come before authorisation problems.
    anonymous = await open_socket()
    reply = await ask(anonymous, {"type": "JOIN_ENVIRONMENT", "data": {"environmentId": 5}})
    assert_error(reply, "INVALID_MESSAGE")
    await anonymous.disconnect()
    await socket.disconnect()


# --- trading ----------------------------------------------------------------------------------


async def test_a_buy_reaches_everyone_and_the_trader_gets_one_private_copy(alice, bob, environment):
    trader = await joined(alice, environment)
    watcher = await joined(bob, environment)
    reply = await ask(trader, {**trade(environment, "1000000000"), "requestId": "t-1"})
    assert reply["type"] == "VIRTUAL_TRADE_EXECUTED"
    assert reply["requestId"] == "t-1"
    data = reply["data"]
    protocol.TradeExecuted.model_validate(data)
    assert data["trade"]["userId"] == alice.address
    assert data["trade"]["amount"] == "1000000000"
    assert data["trade"]["isBuy"] is True
    assert data["trade"]["tokenAmount"] == "34199203154141"
    assert data["trade"]["solAmount"] == "987654320"
    assert data["trade"]["fee"] == str(9_382_717 + 2_962_963)
    assert data["trade"]["price"].startswith("0.0000000288")
    assert data["trade"]["sequence"] == data["sequence"] == 1
    assert data["newReserves"] == {
        "sol": str(30_000_000_000 + 987_654_320),
        "token": str(1_073_000_000_000_000 - 34_199_203_154_141),
    }
    paid = 987_654_320 + 9_382_717 + 2_962_963
    assert data["balance"] == {"sol": str(100_000_000_000 - paid), "token": "34199203154141"}

    seen = await receive(watcher)
    assert seen["type"] == "VIRTUAL_TRADE_EXECUTED"
    assert "requestId" not in seen
    assert "balance" not in seen["data"]
    assert seen["data"]["trade"] == data["trade"]
    assert await trader.receive_nothing(timeout=0.2)
    await trader.disconnect()
    await watcher.disconnect()


async def test_sell_all_and_the_state_shows_the_history(alice, environment):
    socket = await joined(alice, environment)
    bought = await ask(socket, trade(environment, "2000000000"))
    tokens = bought["data"]["balance"]["token"]
    sold = await ask(socket, trade(environment, tokens, is_buy=False))
    assert sold["type"] == "VIRTUAL_TRADE_EXECUTED"
    assert sold["data"]["balance"]["token"] == "0"
    assert int(sold["data"]["balance"]["sol"]) < 100_000_000_000
    assert sold["data"]["sequence"] == 2
    state = await ask(
        socket,
        {
            "type": "JOIN_ENVIRONMENT",
            "data": {"environmentId": environment.id, "userId": alice.address},
        },
    )
    assert state["data"]["sequence"] == 2
    assert [item["sequence"] for item in state["data"]["trades"]] == [1, 2]
    assert state["data"]["realTokenReserves"] == "793100000000000"
    await socket.disconnect()


@pytest.mark.parametrize(
    "amount",
    [1000000000, "-1", "1e9", "1.5", "", "18446744073709551616", "0x10", " 5", None, True],
)
async def test_malformed_amounts_are_invalid_and_change_nothing(alice, environment, amount):
    socket = await joined(alice, environment)
    before = await database_snapshot_async()
    reply = await ask(socket, trade(environment, amount))
    assert_error(reply, "INVALID_MESSAGE")
    assert reply["data"]["details"]["errors"][0]["field"] == "amount"
    assert await database_snapshot_async() == before
    await socket.disconnect()


async def database_snapshot_async() -> tuple:
    from asgiref.sync import sync_to_async

    return await sync_to_async(database_snapshot)()


async def test_trade_error_codes_in_the_contracts_order(alice, environment, make_environment):
    socket = await joined(alice, environment)
    before = await database_snapshot_async()
    # Not joined → UNAUTHORIZED, even when the environment does not exist.
    assert_error(await ask(socket, trade(Environment(id="env_nowhere"), "10")), "UNAUTHORIZED")
    # Anonymous → UNAUTHORIZED.
    anonymous = await open_socket()
    assert_error(await ask(anonymous, trade(environment, "10")), "UNAUTHORIZED")
    await anonymous.disconnect()
    # More than the balance → INSUFFICIENT_BALANCE.
    reply = await ask(socket, trade(environment, "100000000001"))
    assert_error(reply, "INSUFFICIENT_BALANCE")
    assert reply["data"]["details"]["available"] == "100000000000"
    # Selling tokens it does not have.
    assert_error(await ask(socket, trade(environment, "1", is_buy=False)), "INSUFFICIENT_BALANCE")
    # Too small for the curve.
    reply = await ask(socket, trade(environment, "2"))
    assert_error(reply, "INVALID_MESSAGE")
    assert reply["data"]["message"] == "amount too small"
    # Slippage: asks for more tokens than 1 SOL buys.
    reply = await ask(socket, trade(environment, "1000000000", minAmountOut="34199203154142"))
    assert_error(reply, "SLIPPAGE_EXCEEDED")
    # Insufficient balance wins over amount-too-small and slippage.
    reply = await ask(socket, trade(environment, "200000000000", minAmountOut="99999999999999999"))
    assert_error(reply, "INSUFFICIENT_BALANCE")
    assert await database_snapshot_async() == before
    ok = await ask(socket, trade(environment, "1000000000", minAmountOut="34199203154141"))
    assert ok["type"] == "VIRTUAL_TRADE_EXECUTED"
    await socket.disconnect()


async def test_a_closed_environment_refuses_trades_before_checking_balances(alice, environment):
    from environments.services import environment_set_open
    from kernel.db import db_call

    socket = await joined(alice, environment)
    await db_call(environment_set_open)(environment_id=environment.id, is_open=False)
    assert_error(await ask(socket, trade(environment, "999999999999")), "ENVIRONMENT_CLOSED")
    await db_call(environment_set_open)(environment_id=environment.id, is_open=True)
    assert (await ask(socket, trade(environment, "1000000000")))["type"] == "VIRTUAL_TRADE_EXECUTED"
    await socket.disconnect()


async def test_a_complete_curve_graduates_and_trading_goes_on(alice, make_environment):
    environment = await database_call(
        make_environment, starting_sol_balance=10**13, max_trade_lamports=None
    )
    socket = await joined(alice, environment)
    bought = await ask(socket, trade(environment, "1000000000000"))
    assert bought["type"] == "VIRTUAL_TRADE_EXECUTED"
    assert int(bought["data"]["unspent"]) > 900 * 10**9  # it stopped at completion
    graduated = json.loads(await socket.receive_from(timeout=5))
    assert (graduated["type"], graduated["data"]["sequence"]) == ("MARKET_GRADUATED", 2)
    state = await ask(
        socket,
        {
            "type": "JOIN_ENVIRONMENT",
            "data": {"environmentId": environment.id, "userId": alice.address},
        },
    )
    assert state["data"]["complete"] is True
    assert state["data"]["realTokenReserves"] == "0"
    assert state["data"]["phase"] == "pool"
    assert state["data"]["pool"] == graduated["data"]["pool"]
    again = await ask(socket, trade(environment, "1000000000"))
    assert (again["type"], again["data"]["sequence"]) == ("VIRTUAL_TRADE_EXECUTED", 3)
    await socket.disconnect()


async def database_call(function, *args, **kwargs):
    from asgiref.sync import sync_to_async

    return await sync_to_async(function)(*args, **kwargs)


async def test_an_unexpected_failure_is_internal_error_without_internals(
    alice, environment, monkeypatch
):
    socket = await joined(alice, environment)

    def explode(**kwargs):
        raise RuntimeError("secret database password in a stack trace")

    monkeypatch.setattr("gateway.consumers.trade_execute", explode)
    reply = await ask(socket, {**trade(environment, "1000000000"), "requestId": "boom"})
    assert_error(reply, "INTERNAL_ERROR")
    assert reply["requestId"] == "boom"
    assert "secret" not in json.dumps(reply)
    assert (await ask(socket, {"type": "HEARTBEAT"}))["type"] == "HEARTBEAT"
    await socket.disconnect()


# --- chat -------------------------------------------------------------------------------------


async def test_chat_is_trimmed_stored_and_broadcast(alice, bob, environment):
    speaker = await joined(alice, environment)
    listener = await joined(bob, environment)
    markup = "  <script>alert('x')</script> gm  "
    reply = await ask(
        speaker,
        {
            "type": "CHAT_MESSAGE",
            "requestId": "c1",
            "data": {"environmentId": environment.id, "message": markup},
        },
    )
    assert reply["type"] == "CHAT_MESSAGE"
    assert reply["requestId"] == "c1"
    protocol.ChatMessageView.model_validate(reply["data"])
    assert reply["data"]["message"] == "<script>alert('x')</script> gm"
    assert reply["data"]["userId"] == alice.address
    assert reply["data"]["sequence"] == 1
    heard = await receive(listener)
    assert "requestId" not in heard
    assert heard["data"] == reply["data"]
    stored = await ChatMessage.objects.aget(pk=int(reply["data"]["id"]))
    assert stored.message == "<script>alert('x')</script> gm"
    await speaker.disconnect()
    await listener.disconnect()


@pytest.mark.parametrize("text", ["", "   \n\t ", "x" * 501, 42, None])
async def test_bad_chat_is_invalid(alice, environment, text):
    socket = await joined(alice, environment)
    reply = await ask(
        socket, {"type": "CHAT_MESSAGE", "data": {"environmentId": environment.id, "message": text}}
    )
    assert_error(reply, "INVALID_MESSAGE")
    assert await ChatMessage.objects.acount() == 0
    await socket.disconnect()


async def test_chat_limits_count_code_points(alice, environment):
    socket = await joined(alice, environment)
    reply = await ask(
        socket,
        {"type": "CHAT_MESSAGE", "data": {"environmentId": environment.id, "message": "🚀" * 500}},
    )
    assert reply["type"] == "CHAT_MESSAGE"
    await socket.disconnect()


async def test_chat_needs_a_joined_environment(alice, environment):
    socket = await open_socket(alice)
    reply = await ask(
        socket, {"type": "CHAT_MESSAGE", "data": {"environmentId": environment.id, "message": "hi"}}
    )
    assert_error(reply, "UNAUTHORIZED")
    await socket.disconnect()


async def test_hidden_messages_leave_the_history_and_sequences_span_trades_and_chat(
    alice, environment
):
    from environments.services import chat_set_hidden

    socket = await joined(alice, environment)
    sequences = []
    for index in range(3):
        said = await ask(
            socket,
            {
                "type": "CHAT_MESSAGE",
                "data": {"environmentId": environment.id, "message": f"line {index}"},
            },
        )
        sequences.append(said["data"]["sequence"])
        traded = await ask(socket, trade(environment, "100000000"))
        sequences.append(traded["data"]["sequence"])
    assert sequences == [1, 2, 3, 4, 5, 6]
    first = await ChatMessage.objects.aget(sequence=1, environment_id=environment.id)
    await database_call(chat_set_hidden, message_ids=[first.pk], hidden=True)
    state = await ask(
        socket,
        {
            "type": "JOIN_ENVIRONMENT",
            "data": {"environmentId": environment.id, "userId": alice.address},
        },
    )
    assert [item["message"] for item in state["data"]["chatHistory"]] == ["line 1", "line 2"]
    assert state["data"]["sequence"] == 6
    await socket.disconnect()


# --- batches ----------------------------------------------------------------------------------


async def test_a_batch_is_answered_item_by_item_in_order(alice, environment):
    socket = await joined(alice, environment)
    items = [
        {"environmentId": environment.id, "amount": "100000000", "isBuy": True},
        {"environmentId": environment.id, "amount": 5, "isBuy": True},
        {"environmentId": environment.id, "amount": "200000000", "isBuy": True},
    ]
    await socket.send_to(
        text_data=json.dumps({"type": "VIRTUAL_TRADE", "requestId": "b", "data": items})
    )
    replies = [await receive(socket) for _ in items]
    assert [reply["type"] for reply in replies] == [
        "VIRTUAL_TRADE_EXECUTED",
        "ERROR",
        "VIRTUAL_TRADE_EXECUTED",
    ]
    assert all(reply["requestId"] == "b" for reply in replies)
    assert [replies[0]["data"]["sequence"], replies[2]["data"]["sequence"]] == [1, 2]
    await socket.disconnect()


@pytest.mark.parametrize("size", [0, 51])
async def test_an_empty_or_oversized_batch_is_one_error_and_nothing_runs(alice, environment, size):
    socket = await joined(alice, environment)
    items = [{"environmentId": environment.id, "amount": "100000000", "isBuy": True}] * size
    reply = await ask(socket, {"type": "VIRTUAL_TRADE", "data": items})
    assert_error(reply, "INVALID_MESSAGE")
    assert await socket.receive_nothing(timeout=0.3)
    assert await Trade.objects.acount() == 0
    await socket.disconnect()


async def test_fifty_heartbeats_in_one_batch(alice):
    socket = await open_socket(alice)
    await socket.send_to(text_data=json.dumps({"type": "HEARTBEAT", "data": [{}] * 50}))
    replies = [await receive(socket) for _ in range(50)]
    assert {reply["type"] for reply in replies} == {"HEARTBEAT"}
    await socket.disconnect()


# --- rate limit -------------------------------------------------------------------------------


@pytest.fixture
def tight_limit(settings):
    settings.FUNPUMP_RATE_LIMIT = "5/60"
    settings.FUNPUMP_REDIS_PREFIX = f"test-{uuid.uuid4().hex}"  # a fresh window per test


async def test_over_the_limit_messages_get_rate_limited_and_are_not_processed(
    tight_limit, alice, environment
):
    socket = await joined(alice, environment)  # the join is message 1 of 5
    for index in range(4):
        reply = await ask(
            socket,
            {
                "type": "CHAT_MESSAGE",
                "data": {"environmentId": environment.id, "message": f"m{index}"},
            },
        )
        assert reply["type"] == "CHAT_MESSAGE"
    reply = await ask(
        socket,
        {
            "type": "CHAT_MESSAGE",
            "requestId": "late",
            "data": {"environmentId": environment.id, "message": "one too many"},
        },
    )
    assert_error(reply, "RATE_LIMITED")
    assert reply["requestId"] == "late"
    assert 0 < reply["data"]["details"]["retryAfterMs"] <= 60_000
    assert await ChatMessage.objects.acount() == 4
    # Malformed messages count and are refused too; heartbeats are exempt.
    assert_error(await ask(socket, "{broken"), "RATE_LIMITED")
    assert (await ask(socket, {"type": "HEARTBEAT"}))["type"] == "HEARTBEAT"
    await socket.disconnect()


async def test_the_limit_spans_a_wallets_connections_and_batches_count_item_by_item(
    tight_limit, alice, environment
):
    first = await joined(alice, environment)  # 1
    second = await joined(alice, environment)  # 2
    items = [{"environmentId": environment.id, "message": f"b{index}"} for index in range(5)]
    await second.send_to(text_data=json.dumps({"type": "CHAT_MESSAGE", "data": items}))
    replies = [await receive(second) for _ in items]
    assert [reply["type"] for reply in replies] == ["CHAT_MESSAGE"] * 3 + ["ERROR"] * 2
    assert {reply["data"]["code"] for reply in replies[3:]} == {"RATE_LIMITED"}
    reply = await ask(first, join_frame(environment, alice))
    # The first connection's copies of the 3 chat lines come first, then the refusal.
    while reply["type"] == "CHAT_MESSAGE":
        reply = await receive(first)
    assert_error(reply, "RATE_LIMITED")
    await first.disconnect()
    await second.disconnect()


async def test_anonymous_connections_are_limited_per_client_address(tight_limit):
    sockets = [await open_socket() for _ in range(2)]
    for index in range(5):
        reply = await ask(sockets[index % 2], {"type": "NOPE"})
        assert_error(reply, "INVALID_MESSAGE")
    assert_error(await ask(sockets[0], {"type": "NOPE"}), "RATE_LIMITED")
    for socket in sockets:
        await socket.disconnect()


# --- idle timeout -----------------------------------------------------------------------------


async def test_a_silent_connection_is_closed_with_4408_and_heartbeats_keep_it(settings):
    settings.FUNPUMP_IDLE_TIMEOUT = 0.5
    talker, silent = await open_socket(), await open_socket()
    for _ in range(4):
        await asyncio.sleep(0.2)
        assert (await ask(talker, {"type": "HEARTBEAT"}))["type"] == "HEARTBEAT"
    closed = await silent.receive_output(timeout=1)
    assert closed == {"type": "websocket.close", "code": 4408}
    assert (await ask(talker, {"type": "HEARTBEAT"}))["type"] == "HEARTBEAT"
    await talker.disconnect()
