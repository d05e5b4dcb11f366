"""What is published from the declarations: the JSON Schema of ``/api/protocol.json``, the
AsyncAPI 3.0 document of ``/api/asyncapi.json`` and the constants the page reads.

Nothing here is written by hand twice: every schema comes from the models in
:mod:`protocol.messages`, every name and limit from its constants.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from protocol.messages import (
    CLIENT_MESSAGES,
    CONFIRMED_BY,
    DATA_OPTIONAL,
    MAX_BATCH,
    MAX_CHAT_CHARS,
    MAX_REQUEST_ID_CHARS,
    SERVER_MESSAGES,
)

TITLE = "FunPump WebSocket protocol"
VERSION = "1.0.0"
ENVELOPE = (
    "Every frame is a JSON object {type, data, requestId?}; requestId (1-64 characters) is copied "
    "onto the direct answer to the message that carried it."
)

_Mode = Literal["validation", "serialization"]


def _schemas(ref_template: str) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """The data schema's reference of each client and server message type, and the schemas."""
    models: list[tuple[type[BaseModel], _Mode]] = []
    models += [(model, "validation") for model in CLIENT_MESSAGES.values()]
    models += [(reply, "serialization") for reply in SERVER_MESSAGES.values()]
    keys, schema = models_json_schema(models, ref_template=ref_template)
    client = {name: keys[(model, "validation")]["$ref"] for name, model in CLIENT_MESSAGES.items()}
    server = {
        name: keys[(model, "serialization")]["$ref"] for name, model in SERVER_MESSAGES.items()
    }
    return client, server, schema.get("$defs", {})


def json_schema() -> dict[str, Any]:
    """JSON Schema of every message, both directions: the data of each message type."""
    client, server, definitions = _schemas("#/$defs/{model}")
    return {
        "$defs": definitions,
        "title": TITLE,
        "description": (
            "Every frame is {type, data, requestId?}. clientMessages and serverMessages map each "
            "message type to the schema of its data; a client message's data may also be an "
            f"array of 1-{MAX_BATCH} such objects (a batch)."
        ),
        "clientMessages": {name: {"$ref": ref} for name, ref in client.items()},
        "serverMessages": {name: {"$ref": ref} for name, ref in server.items()},
    }


def _request_id() -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_REQUEST_ID_CHARS,
        "description": "Copied onto the direct answer: the reply, the ERROR or the own copy.",
    }


def _envelope(message_type: str, data: dict[str, Any], *, data_required: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "type": {"type": "string", "const": message_type},
            "data": data,
            "requestId": _request_id(),
        },
        "required": ["type", "data"] if data_required else ["type"],
    }


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``/ws``, as the server sees it: it receives the client
    messages and sends the server messages, on the one channel.

    Message keys carry their direction (``client.HEARTBEAT``, ``server.HEARTBEAT``: some types
    go both ways with different data); each message's ``name`` is its wire ``type``.
    """
    client, server, definitions = _schemas("#/components/schemas/{model}")
    messages: dict[str, Any] = {}
    for name, ref in client.items():
        single = {"$ref": ref}
        batch = {"type": "array", "items": single, "minItems": 1, "maxItems": MAX_BATCH}
        model = CLIENT_MESSAGES[name]
        messages[f"client.{name}"] = {
            "name": name,
            "title": name,
            "summary": _summary(model),
            "payload": _envelope(
                name, {"oneOf": [single, batch]}, data_required=name not in DATA_OPTIONAL
            ),
        }
    for name, ref in server.items():
        messages[f"server.{name}"] = {
            "name": name,
            "title": name,
            "summary": _summary(SERVER_MESSAGES[name]),
            "payload": _envelope(name, {"$ref": ref}, data_required=True),
        }

    def in_channel(keys: list[str]) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/room/messages/{key}"} for key in keys]

    return {
        "asyncapi": "3.0.0",
        "info": {"title": TITLE, "version": VERSION, "description": ENVELOPE},
        "defaultContentType": "application/json",
        "channels": {
            "room": {
                "address": "/ws",
                "title": "The trading room socket",
                "description": (
                    "One socket per client: environments, trades, chat, prices, rewards and "
                    f"voice. A client message's data may be an array of 1-{MAX_BATCH} items "
                    "(a batch), each answered on its own, in order."
                ),
                "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in messages},
            }
        },
        "operations": {
            "receive": {
                "action": "receive",
                "channel": {"$ref": "#/channels/room"},
                "summary": "Messages a client sends.",
                "messages": in_channel([f"client.{name}" for name in client]),
            },
            "send": {
                "action": "send",
                "channel": {"$ref": "#/channels/room"},
                "summary": "Messages the server sends: replies, broadcasts and feeds.",
                "messages": in_channel([f"server.{name}" for name in server]),
            },
        },
        "components": {"schemas": definitions, "messages": messages},
    }


def _summary(model: type[BaseModel]) -> str:
    """The first paragraph of a model's docstring, as Markdown."""
    first = (model.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(first.split()).replace("``", "`")


def page_constants() -> dict[str, Any]:
    """The names and limits the trading-room page needs, so that it copies none of them."""
    return {"maxChatChars": MAX_CHAT_CHARS, "confirmedBy": CONFIRMED_BY}
