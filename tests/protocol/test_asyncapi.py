"""The AsyncAPI 3.0 document of /ws: complete, internally consistent, and true to real frames."""

import json
from typing import Any

import pytest
from django.test import Client
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

import protocol
from protocol.errors import DomainError, ErrorCode

DOCUMENT = "urn:funpump:asyncapi"
WALLET = "11111111111111111111111111111111"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return protocol.asyncapi()


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def follow(document: dict[str, Any], ref: str) -> Any:
    """Resolve ``ref``, and the reference it lands on, until something else is found."""
    node = resolve(document, ref)
    while set(node) == {"$ref"}:
        node = resolve(document, node["$ref"])
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def payload_validator(document: dict[str, Any], message: str) -> Draft7Validator:
    registry = Registry().with_resource(
        DOCUMENT, Resource.from_contents(document, default_specification=DRAFT7)
    )
    schema = {"$ref": f"{DOCUMENT}#/components/messages/{message}/payload"}
    return Draft7Validator(schema, registry=registry)


def test_the_required_parts_of_asyncapi_3(document):
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] and document["info"]["version"]
    (channel,) = document["channels"].values()
    assert channel["address"] == "/ws"
    assert document["components"]["messages"]
    for name, operation in document["operations"].items():
        assert operation["action"] in {"send", "receive"}, name
        assert resolve(document, operation["channel"]["$ref"]) is channel
        for message in operation["messages"]:
            # An operation's messages are the channel's own (AsyncAPI 3.0).
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/")


def test_every_reference_resolves(document):
    found = refs(document)
    assert len(found) > 50
    for ref in found:
        resolve(document, ref)


def test_the_server_receives_the_client_messages_and_sends_its_own(document):
    def names(action: str) -> list[str]:
        (operation,) = [op for op in document["operations"].values() if op["action"] == action]
        return [follow(document, ref["$ref"])["name"] for ref in operation["messages"]]

    assert names("receive") == list(protocol.CLIENT_MESSAGES)
    assert names("send") == list(protocol.SERVER_MESSAGES)


def test_every_payload_schema_is_a_valid_schema(document):
    for message in document["components"]["messages"].values():
        Draft7Validator.check_schema(message["payload"])
    for schema in document["components"]["schemas"].values():
        Draft7Validator.check_schema(schema)


def test_frames_the_server_encodes_match_their_message(document):
    error = DomainError(ErrorCode.INVALID_MESSAGE, "invalid data", {"field": "amount"})
    frame = json.loads(protocol.error_frame(error, "r-1"))
    payload_validator(document, "server.ERROR").validate(frame)
    heartbeat = json.loads(protocol.encode("HEARTBEAT", protocol.HeartbeatReply(timestamp=1)))
    payload_validator(document, "server.HEARTBEAT").validate(heartbeat)
    assert not payload_validator(document, "server.HEARTBEAT").is_valid(frame)


def test_client_messages_alone_or_in_batches_of_up_to_the_limit(document):
    validator = payload_validator(document, "client.CLAIM_REWARDS")
    claim = {"userId": WALLET}
    assert validator.is_valid({"type": "CLAIM_REWARDS", "data": claim, "requestId": "c-1"})
    batch = {"type": "CLAIM_REWARDS", "data": [claim] * protocol.MAX_BATCH}
    assert validator.is_valid(batch)
    assert not validator.is_valid({**batch, "data": [claim] * (protocol.MAX_BATCH + 1)})
    assert not validator.is_valid({**batch, "data": []})
    assert not validator.is_valid({"type": "CLAIM_REWARDS"})
    assert payload_validator(document, "client.HEARTBEAT").is_valid({"type": "HEARTBEAT"})


@pytest.mark.django_db
def test_it_is_served(document):
    response = Client(HTTP_HOST="127.0.0.1").get("/api/asyncapi.json")
    assert response.status_code == 200
    assert response.json() == document
