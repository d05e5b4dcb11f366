"""Hostile input: thousands of random and mutated frames against the full ASGI app.

Every frame must get well-formed answers (one per message, one per batch item), the
connection must survive, no internals may leak, and the database may change only by what the
server reported as done; on the curve and in the pool phase.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol
from environments.models import ChatMessage, Environment, Position
from environments.services import environment_create, environment_join
from kernel.realtime import Hub
from tests.conftest import Wallet, open_socket
from trading.models import Trade
from trading.services import trade_execute
from trading.state import CurveConstants

pytestmark = pytest.mark.django_db(transaction=True)

ERROR_CODES = {code.value for code in protocol.ErrorCode}
SERVER_TYPES = set(protocol.SERVER_MESSAGES)

# Characters that are not text where text is expected: lone surrogates (valid JSON escapes,
# invalid UTF-8), NUL and other C0/C1 controls, bidi overrides and isolates, zero-width ones.
HOSTILE = (
    "\x00\x07\x1b\x7f\x85\x9b\t\n\r\ud800\udbff\udc00\udfff"
    "\u200b\u200d\u2060\ufeff\u202a\u202e\u2066\u2069"
)
hostile_text = st.text(alphabet=st.one_of(st.characters(), st.sampled_from(HOSTILE)), max_size=30)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | hostile_text,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.one_of(st.text(max_size=10), hostile_text), children, max_size=5)
    ),
    max_leaves=15,
)
amounts = st.one_of(
    st.integers(min_value=0, max_value=2**64 + 5).map(str),
    st.sampled_from(["", "-1", "1e9", "0x1", " 1", "1.5", "99999999999999999999999"]),
    json_values,
)


def valid_messages(environment_id: str, wallet: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.just({"type": "HEARTBEAT"}),
        st.just(
            {
                "type": "JOIN_ENVIRONMENT",
                "data": {"environmentId": environment_id, "userId": wallet},
            }
        ),
        st.builds(
            lambda amount, is_buy: {
                "type": "VIRTUAL_TRADE",
                "data": {"environmentId": environment_id, "amount": amount, "isBuy": is_buy},
            },
            st.integers(min_value=1, max_value=5 * 10**9).map(str),
            st.booleans(),
        ),
        st.builds(
            lambda amount, is_buy: {
                "type": "QUOTE_TRADE",
                "data": {"environmentId": environment_id, "amount": amount, "isBuy": is_buy},
            },
            st.integers(min_value=1, max_value=60 * 10**9).map(str),
            st.booleans(),
        ),
        st.builds(
            lambda text: {
                "type": "CHAT_MESSAGE",
                "data": {"environmentId": environment_id, "message": text},
            },
            st.text(min_size=0, max_size=600) | hostile_text,
        ),
        st.builds(
            lambda text: {
                "type": "JOIN_ENVIRONMENT",
                "data": {"environmentId": environment_id + text, "userId": wallet},
            },
            hostile_text,
        ),
    )


@st.composite
def mutated(draw: Any, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid-looking message with one thing broken (or none)."""
    message = json.loads(json.dumps(draw(base)))
    action = draw(st.sampled_from(["keep", "field", "drop", "type", "data", "request", "batch"]))
    data = message.get("data")
    if action == "field" and isinstance(data, dict) and data:
        key = draw(st.sampled_from(sorted(data)))
        data[key] = draw(amounts if key == "amount" else json_values)
    elif action == "drop" and isinstance(data, dict) and data:
        del data[draw(st.sampled_from(sorted(data)))]
    elif action == "type":
        message["type"] = draw(st.one_of(st.text(max_size=20), hostile_text, json_values))
    elif action == "data":
        message["data"] = draw(json_values)
    elif action == "request":
        message["requestId"] = draw(st.one_of(st.text(max_size=80), hostile_text, json_values))
    elif action == "batch":
        size = draw(st.sampled_from([0, 1, 2, 3, 51]))
        message["data"] = [data if data is not None else {}] * size
    return message


def frames(environment_id: str, wallet: str) -> st.SearchStrategy[str]:
    messages = mutated(valid_messages(environment_id, wallet))
    return st.one_of(
        messages.map(json.dumps),
        json_values.map(json.dumps),
        st.text(max_size=200),
        hostile_text,
        st.just("[" * 5000),
        st.just('{"type": "HEARTBEAT", "data": ' + "[" * 3000 + "]" * 3000 + "}"),
    )


def expected_answers(frame: str) -> int:
    """How many answers the contract promises for one frame."""
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        return 1
    if not isinstance(message, dict) or has_lone_surrogate(message):
        return 1
    data = message.get("data")
    message_type = message.get("type")
    known = isinstance(message_type, str) and message_type in protocol.CLIENT_MESSAGES
    request_id = message.get("requestId")
    request_ok = request_id is None or (
        isinstance(request_id, str) and 1 <= len(request_id) <= 64 and request_id.isprintable()
    )
    if known and request_ok and isinstance(data, list) and 1 <= len(data) <= protocol.MAX_BATCH:
        return len(data)
    return 1


def has_lone_surrogate(value: Any) -> bool:
    """Any lone surrogate refuses the whole frame, batch or not."""
    if isinstance(value, str):
        return any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, dict):
        return any(
            has_lone_surrogate(key) or has_lone_surrogate(item) for key, item in value.items()
        )
    if isinstance(value, list):
        return any(has_lone_surrogate(item) for item in value)
    return False


def check_answer(answer: dict[str, Any]) -> None:
    assert answer["type"] in SERVER_TYPES, answer
    text = json.dumps(answer)
    assert "Traceback" not in text and 'File "' not in text
    if answer["type"] == "ERROR":
        assert answer["data"]["code"] in ERROR_CODES
        assert answer["data"]["code"] != "INTERNAL_ERROR", answer
        assert isinstance(answer["data"]["message"], str)
    else:
        protocol.SERVER_MESSAGES[answer["type"]].model_validate(answer["data"])


def ledger(environment_id: str) -> dict[str, int]:
    environment = Environment.objects.get(pk=environment_id)
    return {
        "trades": Trade.objects.filter(environment=environment).count(),
        "chat": ChatMessage.objects.filter(environment=environment).count(),
        "sequence": environment.sequence,
        "positions": Position.objects.filter(environment=environment).count(),
    }


@pytest.fixture(params=["curve", "pool"])
def room(request: Any, settings_fixture: Any) -> tuple[str, Wallet]:
    """A room on its curve, or one whose curve another wallet bought out (its pool phase)."""
    if request.param == "curve":
        return environment_create(name="Fuzz").id, Wallet()
    environment = environment_create(
        name="Fuzz pool", constants=CurveConstants(max_trade_lamports=None)
    )
    whale = Wallet().address
    environment_join(environment_id=environment.id, wallet=whale)
    trade_execute(environment_id=environment.id, wallet=whale, amount=100 * 10**9, is_buy=True)
    assert Environment.objects.get(pk=environment.id).phase == "pool"
    return environment.id, Wallet()


@pytest.fixture
def settings_fixture(settings: Any) -> Any:
    settings.FUNPUMP_RATE_LIMIT = "1000000/60"
    return settings


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_and_mutated_frames_get_well_formed_answers(room, data):
    environment_id, wallet = room
    batch = data.draw(st.lists(frames(environment_id, wallet.address), min_size=20, max_size=60))

    async def exchange() -> dict[str, int]:
        before = await sync_to_async(ledger)(environment_id)
        socket = await open_socket(wallet)
        join = {
            "type": "JOIN_ENVIRONMENT",
            "data": {"environmentId": environment_id, "userId": wallet.address},
        }
        await socket.send_to(text_data=json.dumps(join))
        assert json.loads(await socket.receive_from(timeout=5))["type"] == "ENVIRONMENT_STATE"
        done = {"trades": 0, "chat": 0, "graduated": 0}
        graduations = 0  # trades whose own copy says the curve completed
        for frame in batch:
            # Raw input: the communicator's helper refuses an empty text frame.
            await socket.send_input({"type": "websocket.receive", "text": frame})
            answered = 0
            while answered < expected_answers(frame):
                answer = json.loads(await socket.receive_from(timeout=5))
                check_answer(answer)
                if answer["type"] == "MARKET_GRADUATED":  # a broadcast, not an answer
                    done["graduated"] += 1
                    continue
                answered += 1
                if answer["data"].get("replay"):
                    continue  # a repeated requestId: answered again, not run again
                if answer["type"] == "VIRTUAL_TRADE_EXECUTED":
                    done["trades"] += 1
                    graduations += "unspent" in answer["data"]
                elif answer["type"] == "CHAT_MESSAGE":
                    done["chat"] += 1
        while done["graduated"] < graduations:  # sent once, after the completing trade
            answer = json.loads(await socket.receive_from(timeout=5))
            assert answer["type"] == "MARKET_GRADUATED", answer
            done["graduated"] += 1
        assert done["graduated"] == graduations <= 1
        assert await socket.receive_nothing(timeout=0.05)
        # Still alive after everything.
        await socket.send_to(text_data='{"type": "HEARTBEAT"}')
        assert json.loads(await socket.receive_from(timeout=5))["type"] == "HEARTBEAT"
        await socket.disconnect()
        after = await sync_to_async(ledger)(environment_id)
        hub = Hub.instance
        if hub is not None:
            await hub.close()
        assert after["trades"] - before["trades"] == done["trades"]
        assert after["chat"] - before["chat"] == done["chat"]
        assert after["sequence"] - before["sequence"] == (
            done["trades"] + done["chat"] + done["graduated"]
        )
        return done

    async_to_sync(exchange)()
