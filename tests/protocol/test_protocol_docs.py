"""The published protocol: schema generated from the declarations, docs that name every message."""

from pathlib import Path

import pytest

import protocol

DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_every_declared_message_is_documented():
    text = DOCS.read_text()
    for name in [*protocol.CLIENT_MESSAGES, *protocol.SERVER_MESSAGES]:
        assert f"`{name}`" in text, name


def test_the_schema_describes_both_directions():
    schema = protocol.json_schema()
    assert set(schema["clientMessages"]) == set(protocol.CLIENT_MESSAGES)
    assert set(schema["serverMessages"]) == set(protocol.SERVER_MESSAGES)
    trade = schema["$defs"]["VirtualTradeData"]
    assert trade["required"] == ["environmentId", "amount", "isBuy"]
    assert trade["properties"]["amount"]["pattern"] == "^[0-9]{1,20}$"


@pytest.mark.parametrize("error_code", list(protocol.ErrorCode))
def test_every_error_code_is_in_the_schema(error_code):
    codes = protocol.json_schema()["$defs"]["ErrorCode"]["enum"]
    assert error_code.value in codes


def test_the_openapi_schema_is_valid_and_complete(tmp_path):
    from django.core.management import call_command

    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    assert "walletToken" in target.read_text()
