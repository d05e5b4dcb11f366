"""The published HTTP schemas: OpenAPI at ``/api/schema`` and the WebSocket protocol's JSON
Schema at ``/api/protocol.json``."""

from __future__ import annotations

import json
from typing import Any

from django.test import Client


def openapi(client: Client) -> dict[str, Any]:
    response = client.get("/api/schema?format=json")
    assert response.status_code == 200
    schema: dict[str, Any] = json.loads(response.content)
    return schema


def test_openapi_schema_names_the_api(db: None) -> None:
    schema = openapi(Client())
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in (
        "/api/environments",
        "/api/environments/{environment_id}",
        "/api/environments/{environment_id}/trades",
        "/api/auth/challenge",
        "/api/auth/verify",
        "/api/health",
    ):
        assert path in paths, sorted(paths)
    assert {"get", "post"} <= set(paths["/api/environments"])
    trades = paths["/api/environments/{environment_id}/trades"]["get"]
    trade_params = {param["name"] for param in trades["parameters"]}
    assert {"before", "limit"} <= trade_params


def test_openapi_schema_by_accept_header(db: None) -> None:
    response = Client().get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert json.loads(response.content)["openapi"].startswith("3.")


def test_openapi_schema_default_is_yaml(db: None) -> None:
    response = Client().get("/api/schema")
    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3.")
    assert b"/api/environments" in response.content


def test_openapi_schema_describes_the_responses(db: None) -> None:
    paths = openapi(Client())["paths"]
    listing = paths["/api/environments"]["get"]["responses"]["200"]
    assert "content" in listing
    launch = paths["/api/environments"]["post"]["responses"]
    assert "201" in launch and "content" in launch["201"]
    trades = paths["/api/environments/{environment_id}/trades"]["get"]["responses"]["200"]
    assert "content" in trades


def test_protocol_json_lists_the_messages(db: None) -> None:
    response = Client().get("/api/protocol.json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    schema = response.json()
    assert {"HEARTBEAT", "JOIN_ENVIRONMENT", "VIRTUAL_TRADE", "CHAT_MESSAGE"} <= set(
        schema["clientMessages"]
    )
    assert {"ENVIRONMENT_STATE", "VIRTUAL_TRADE_EXECUTED", "ERROR", "CHAT_MESSAGE"} <= set(
        schema["serverMessages"]
    )
    definitions = schema.get("$defs", {})
    for reference in [*schema["clientMessages"].values(), *schema["serverMessages"].values()]:
        ref = reference["$ref"] if isinstance(reference, dict) else reference
        assert ref.rsplit("/", 1)[-1] in definitions, ref
