"""Hostile strings: text that is not text for its field is INVALID_MESSAGE naming the field.

Lone surrogates (``"\\ud800"`` in JSON), NUL and other control characters never reach the
database, the log or the socket's UTF-8 encoder; the connection stays open and answers. Chat's
own rules (docs/protocol.md) are checked here too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import websockets
from channels.db import database_sync_to_async

from environments.models import ChatMessage
from environments.services import environment_create
from tests.conftest import Wallet, open_socket
from tests.e2e import conftest as e2e

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

daphne_server = e2e.daphne_server  # the real-server fixture
LONE_SURROGATE = "\\ud800"  # as a client writes it in JSON text: a valid UTF-8 frame


async def ask(socket: Any, frame: str | dict[str, Any]) -> dict[str, Any]:
    await socket.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))
    answer: dict[str, Any] = json.loads(await socket.receive_from(timeout=5))
    return answer


def invalid(answer: dict[str, Any]) -> dict[str, Any]:
    assert answer["type"] == "ERROR", answer
    assert answer["data"]["code"] == "INVALID_MESSAGE", answer
    details: dict[str, Any] = answer["data"]["details"]
    return details


def problem_fields(details: dict[str, Any]) -> set[str]:
    if "field" in details:
        return {details["field"]}
    return {error["field"] for error in details["errors"]}


async def still_answers(socket: Any) -> None:
    assert (await ask(socket, {"type": "HEARTBEAT"}))["type"] == "HEARTBEAT"


async def joined(wallet: Wallet, environment_id: str) -> Any:
    socket = await open_socket(wallet)
    state = await ask(
        socket,
        {
            "type": "JOIN_ENVIRONMENT",
            "data": {"environmentId": environment_id, "userId": wallet.address},
        },
    )
    assert state["type"] == "ENVIRONMENT_STATE", state
    return socket


@pytest.fixture
def room(db: None) -> str:
    return environment_create(name="Strings").id


# --- envelope ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        ("{broken", {"problem": "Expecting property name enclosed in double quotes"}),
        ('{"type": "HEARTBEAT",}', {"line": 1}),
        ("", {"problem": "Expecting value", "line": 1, "column": 1}),
        ("[1, 2]", {"received": "array"}),
        ('"HEARTBEAT"', {"received": "string"}),
        ("42", {"received": "number"}),
        ("null", {"received": "null"}),
    ],
)
async def test_malformed_json_and_non_objects_say_what_is_wrong(frame, problem):
    socket = await open_socket()
    await socket.send_input({"type": "websocket.receive", "text": frame})
    details = invalid(json.loads(await socket.receive_from(timeout=5)))
    assert details.items() >= problem.items(), details
    assert isinstance(details["problem"], str) and details["problem"]
    await still_answers(socket)
    await socket.disconnect()


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ('{"type": "X' + LONE_SURROGATE + '"}', "type"),
        ('{"type": "HEARTBEAT", "requestId": "r' + LONE_SURROGATE + '"}', "requestId"),
        ('{"type": "HEARTBEAT", "requestId": "r\\u0000"}', "requestId"),
        ('{"type": "HEARTBEAT", "requestId": "r\\n1"}', "requestId"),
        ('{"type": "HEARTBEAT", "data": {"note": "\\udfff"}}', "data.note"),
        ('{"type": "HEARTBEAT", "data": [{}, {"a": ["\\udc00x"]}]}', "data.1.a.0"),
        ('{"type": "HEARTBEAT", "data": {"\\ud834": 1}}', "data"),
    ],
)
async def test_lone_surrogates_and_controls_in_the_envelope_are_invalid(frame, field):
    socket = await open_socket()
    details = invalid(await ask(socket, frame))
    assert problem_fields(details) == {field}
    await still_answers(socket)
    await socket.disconnect()


async def test_a_surrogate_pair_is_ordinary_text():
    socket = await open_socket()
    answer = await ask(socket, '{"type": "HEARTBEAT", "requestId": "\\ud83d\\ude80"}')
    assert answer["type"] == "HEARTBEAT"
    assert answer["requestId"] == "🚀"
    await socket.disconnect()


async def test_the_request_id_comes_back_on_a_surrogate_refusal():
    socket = await open_socket()
    answer = await ask(socket, '{"type": "X\\ud800", "requestId": "r-1"}')
    invalid(answer)
    assert answer["requestId"] == "r-1"
    await socket.disconnect()


# --- fields ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ("\\u0000", "environmentId"),
        ("\\u001b[2J", "environmentId"),
        ("\\u202e", "environmentId"),
        ("\\u200b", "environmentId"),
        (LONE_SURROGATE, "data.environmentId"),
    ],
)
async def test_environment_ids_must_be_printable(alice, room, bad, field):
    socket = await open_socket(alice)
    frame = (
        '{"type": "JOIN_ENVIRONMENT", "data": {"environmentId": "'
        + room
        + bad
        + '", "userId": "'
        + alice.address
        + '"}}'
    )
    assert problem_fields(invalid(await ask(socket, frame))) == {field}
    await still_answers(socket)
    await socket.disconnect()


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ('"hello\\u0000world"', "message"),
        ('"a' + LONE_SURROGATE + 'b"', "data.message"),
        ('"' + LONE_SURROGATE + '"', "data.message"),
        ('"ring \\u0007 bell"', "message"),
        ('"carriage\\rreturn"', "message"),
        ('"del \\u007f"', "message"),
        ('"c1 \\u009b"', "message"),
        ('"abc\\u202edcba"', "message"),  # right-to-left override
        ('"abc\\u202adef"', "message"),  # left-to-right embedding
        ('"abc\\u2067def"', "message"),  # right-to-left isolate
        ('"\\u200b\\u200b\\u200b"', "message"),  # zero-width only: empty after trimming
        ('" \\ufeff\\u2060 \\u200d "', "message"),
    ],
)
async def test_chat_refuses_what_is_not_plain_text(alice, room, message, field):
    socket = await joined(alice, room)
    frame = (
        '{"type": "CHAT_MESSAGE", "data": {"environmentId": "'
        + room
        + '", "message": '
        + message
        + "}}"
    )
    details = invalid(await ask(socket, frame))
    assert problem_fields(details) == {field}
    await still_answers(socket)
    await socket.disconnect()
    assert await ChatMessage.objects.acount() == 0


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("line one\nline two", "line one\nline two"),
        ("col\tumn", "col\tumn"),
        ("\u200b hi there \u200b\n", "hi there"),
        ("family 👨\u200d👩\u200d👧", "family 👨\u200d👩\u200d👧"),  # a joiner inside is kept
        ("שלום world", "שלום world"),  # right-to-left text itself is fine
        ("mark\u200fed", "mark\u200fed"),  # a single direction mark is not an override
    ],
)
async def test_chat_keeps_ordinary_text_and_trims_invisible_edges(alice, room, sent, stored):
    socket = await joined(alice, room)
    frame = {"type": "CHAT_MESSAGE", "data": {"environmentId": room, "message": sent}}
    answer = await ask(socket, frame)
    assert answer["type"] == "CHAT_MESSAGE", answer
    assert answer["data"]["message"] == stored
    await socket.disconnect()
    assert [chat.message async for chat in ChatMessage.objects.all()] == [stored]


async def test_voice_session_ids_must_be_printable(alice):
    socket = await open_socket(alice)
    frame = '{"type": "VOICE_SESSION_END", "data": {"sessionId": "s\\u0000"}}'
    assert problem_fields(invalid(await ask(socket, frame))) == {"sessionId"}
    await socket.disconnect()


# --- over a real socket -----------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_hostile_strings_over_a_real_socket_are_answered(daphne_server, alice):
    """daphne encodes every answer as UTF-8: nothing a client sends may make that fail."""
    room = (await database_sync_to_async(environment_create)(name="Real strings")).id
    server = await database_sync_to_async(daphne_server)()
    headers = {"Authorization": f"Bearer {alice.token}"}
    async with websockets.connect(server.ws, additional_headers=headers) as client:
        await client.send('{"type": "X\\ud800"}')
        assert problem_fields(invalid(json.loads(await client.recv()))) == {"type"}
        join = {"environmentId": room, "userId": alice.address}
        await client.send(json.dumps({"type": "JOIN_ENVIRONMENT", "data": join}))
        assert json.loads(await client.recv())["type"] == "ENVIRONMENT_STATE"
        for message in ['"\\u0000"', '"x\\udbff"']:
            await client.send(
                '{"type": "CHAT_MESSAGE", "data": {"environmentId": "'
                + room
                + '", "message": '
                + message
                + "}}"
            )
            invalid(json.loads(await client.recv()))
        await client.send('{"type": "JOIN_ENVIRONMENT", "data": {"environmentId": "a\\u0000"}}')
        invalid(json.loads(await client.recv()))
        await client.send('{"type": "HEARTBEAT"}')
        assert json.loads(await client.recv())["type"] == "HEARTBEAT"
    assert "Traceback" not in server.output()


async def test_a_connection_whose_answers_cannot_be_written_is_closed_not_silent(
    monkeypatch, caplog
):
    from gateway.consumers import RoomConsumer

    async def unencodable(self: Any, text_data: str | None = None, **_: Any) -> None:
        "\ud800".encode()  # what daphne does with every text frame

    socket = await open_socket()
    monkeypatch.setattr(RoomConsumer, "send", unencodable)
    await socket.send_to(text_data='{"type": "HEARTBEAT"}')
    closed = await socket.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 1011}
    assert "writing to" in caplog.text
