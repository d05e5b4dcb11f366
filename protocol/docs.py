"""The message tables of ``docs/protocol.md``, generated from the declarations.

The page's prose is written by hand; its tables of messages and fields are not, so they cannot
miss a field. ``python -m protocol.docs`` rewrites every block between
``<!-- generated: NAME -->`` and ``<!-- end generated -->``; ``--check`` only tells whether they
are current (a test runs the same comparison).
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from protocol.messages import CLIENT_MESSAGES, DATA_OPTIONAL, SERVER_MESSAGES, U64_DESCRIPTION
from protocol.schema import json_schema

DOCS = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
COMMAND = "python -m protocol.docs"
_BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[a-z ]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL
)
_U64_PATTERN = "^[0-9]{1,20}$"


def blocks() -> dict[str, str]:
    """Each generated block of the page by name: the client and the server messages."""
    definitions = json_schema()["$defs"]
    return {
        "client messages": _client_messages(definitions),
        "server messages": _server_messages(definitions),
    }


def render(text: str) -> str:
    """``text`` (the page) with every generated block replaced by its current content."""
    current = blocks()

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in current:
            raise ValueError(f"unknown generated block {name!r}")
        return f"{match[1]}{current[name]}{match[4]}"

    return _BLOCK.sub(replace, text)


# --- the two directions ------------------------------------------------------------------------


def _client_messages(definitions: dict[str, Any]) -> str:
    rows = [_row("type", "data", "what it does"), _row("---", "---", "---")]
    fields = [_row("message", "field", "type", "description"), _row("---", "---", "---", "---")]
    for name, model in CLIENT_MESSAGES.items():
        schema = definitions[model.__name__]
        optional = name in DATA_OPTIONAL
        data = _shape(model, schema, server=False) + (" (optional)" if optional else "")
        rows.append(_row(f"`{name}`", data, _summary(model, name)))
        fields += _fields(f"`{name}`", model, schema, definitions, server=False)
    return "\n".join(rows) + "\n\nFields:\n\n" + "\n".join(fields) + "\n"


def _server_messages(definitions: dict[str, Any]) -> str:
    rows = [_row("type", "data", "what it is"), _row("---", "---", "---")]
    fields = [
        _row("message or object", "field", "type", "description"),
        _row("---", "---", "---", "---"),
    ]
    for name, model in SERVER_MESSAGES.items():
        schema = definitions[model.__name__]
        rows.append(_row(f"`{name}`", _shape(model, schema, server=True), _summary(model, name)))
        fields += _fields(f"`{name}`", model, schema, definitions, server=True)
    for inner in _objects():
        schema = definitions[inner.__name__]
        fields += _fields(f"`{inner.__name__}`", inner, schema, definitions, server=True)
    return "\n".join(rows) + "\n\nFields:\n\n" + "\n".join(fields) + "\n"


def _objects() -> list[type[BaseModel]]:
    """The objects inside server messages that are no message's data themselves (``trade``)."""
    messages = set(SERVER_MESSAGES.values())
    found: list[type[BaseModel]] = []
    for model in SERVER_MESSAGES.values():
        for nested in _nested(model):
            if nested not in messages and nested not in found:
                found.append(nested)
    return found


def _nested(model: type[BaseModel]) -> Iterator[type[BaseModel]]:
    for field in model.model_fields.values():
        yield from _models_in(field.annotation)


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        yield from _nested(annotation)
    elif get_origin(annotation) in (list, dict, Union, types.UnionType):
        for argument in get_args(annotation):
            yield from _models_in(argument)


# --- rows ----------------------------------------------------------------------------------------


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _summary(model: type[BaseModel], name: str) -> str:
    """The first paragraph of the model's docstring, without the type it starts by naming."""
    first = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
    first = first.removeprefix(f"``{name}``: ").removeprefix(f"``{name}`` ")
    return _markdown(first[:1].upper() + first[1:])


def _shape(model: type[BaseModel], schema: dict[str, Any], *, server: bool) -> str:
    names = [
        name + ("?" if _optional(model, schema, name, server=server) else "")
        for name in schema.get("properties", {})
    ]
    return "`{" + ", ".join(names) + "}`"


def _optional(model: type[BaseModel], schema: dict[str, Any], field: str, *, server: bool) -> bool:
    """A client may leave the field out; a server frame leaves it out while it has no value."""
    if server:
        return model.model_fields[field].exclude_if is not None
    return field not in schema.get("required", [])


def _fields(
    label: str,
    model: type[BaseModel],
    schema: dict[str, Any],
    definitions: dict[str, Any],
    *,
    server: bool,
) -> list[str]:
    rows = []
    for field, prop in schema.get("properties", {}).items():
        optional = _optional(model, schema, field, server=server)
        kind = _type(prop, definitions, nullable=not optional)
        notes = " ".join(prop.get("description", "").split())
        if notes == U64_DESCRIPTION:
            notes = ""  # the type says it: "u64 string"
        if optional and server:
            notes = f"Absent when it has no value. {notes}"
        elif optional:
            notes = f"Optional. {notes}"
        if prop.get("default") is not None:
            notes += f" Default `{prop['default']}`."
        rows.append(_row(label, f"`{field}`", kind, _markdown(notes.strip())))
        label = ""
    if not rows:
        rows.append(_row(label, "(none)", "", ""))
    return rows


def _type(prop: dict[str, Any], definitions: dict[str, Any], *, nullable: bool) -> str:
    """A field's JSON Schema as a reader says it: ``u64 string``, ``array of `TradeView` ``."""
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        target = definitions[name]
        if "enum" in target:
            return _one_of(target["enum"])
        message = next(
            (type_ for type_, model in SERVER_MESSAGES.items() if model.__name__ == name), None
        )
        return f"`{message}` data" if message else f"`{name}`"
    if "anyOf" in prop:
        kinds = [_type(part, definitions, nullable=True) for part in prop["anyOf"]]
        if "null" in kinds:
            kinds.remove("null")
            if nullable:
                kinds.append("null")
        return " or ".join(kinds)
    if "enum" in prop:
        return _one_of(prop["enum"])
    kind = prop.get("type")
    if kind == "string":
        if prop.get("pattern") == _U64_PATTERN:
            return "u64 string"
        if "minLength" in prop or "maxLength" in prop:
            return f"string ({prop.get('minLength', 0)}-{prop.get('maxLength', '')} characters)"
        return "string"
    if kind == "array":
        return "array of " + _type(prop["items"], definitions, nullable=True)
    if kind == "object":
        values = prop.get("additionalProperties")
        if isinstance(values, dict):
            return "object of " + _type(values, definitions, nullable=True)
        return "object"
    if kind == "number" and "minimum" in prop and "maximum" in prop:
        return f"number {prop['minimum']}-{prop['maximum']}"
    return str(kind)


def _one_of(values: list[Any]) -> str:
    return "one of " + ", ".join(f"`{value}`" for value in values)


def _markdown(text: str) -> str:
    """reStructuredText literals as Markdown code, and no cell-breaking pipes."""
    return text.replace("``", "`").replace("|", "\\|")


def main(argv: list[str]) -> int:
    """Rewrite the page's generated blocks; with ``--check``, only report whether they are stale."""
    text = DOCS.read_text(encoding="utf-8")
    fresh = render(text)
    if "--check" in argv:
        if fresh != text:
            print(f"{DOCS} is stale: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    if fresh != text:
        DOCS.write_text(fresh, encoding="utf-8")
        print(f"rewrote the generated tables of {DOCS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
