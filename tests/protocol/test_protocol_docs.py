"""The published protocol: schema and docs generated from the declarations, and still current."""

import pytest

import protocol
from protocol import docs


def test_the_message_tables_of_the_docs_are_current():
    text = docs.DOCS.read_text(encoding="utf-8")
    assert docs.render(text) == text, f"docs/protocol.md is stale: run `{docs.COMMAND}`"


def test_the_docs_have_a_generated_table_for_each_direction():
    text = docs.DOCS.read_text(encoding="utf-8")
    for name in docs.blocks():
        assert f"<!-- generated: {name} -->" in text, name


def test_the_tables_name_every_message_and_field():
    tables = docs.blocks()
    for name, model in protocol.CLIENT_MESSAGES.items():
        assert f"| `{name}` |" in tables["client messages"], name
        for field in model.model_fields:
            assert f"`{field}`" in tables["client messages"], (name, field)
    for name, model in protocol.SERVER_MESSAGES.items():
        assert f"| `{name}` |" in tables["server messages"], name
        for field in model.model_fields:
            assert f"`{field}`" in tables["server messages"], (name, field)
    assert "| `marketPrice` | string or null |" in tables["server messages"]


def test_a_stale_table_is_rewritten_and_reported(tmp_path, monkeypatch, capsys):
    page = tmp_path / "protocol.md"
    page.write_text("Prose.\n<!-- generated: server messages -->\nold\n<!-- end generated -->\n")
    monkeypatch.setattr(docs, "DOCS", page)
    assert docs.main(["--check"]) == 1
    assert docs.COMMAND in capsys.readouterr().err
    assert docs.main([]) == 0
    rewritten = page.read_text()
    assert rewritten.startswith("Prose.\n") and "old" not in rewritten
    assert "`VIRTUAL_TRADE_EXECUTED`" in rewritten
    assert docs.main(["--check"]) == 0


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
