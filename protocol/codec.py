"""Frames in and out: the envelope read, payloads validated, and the one encoder of frames."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from protocol.errors import DomainError, ErrorCode
from protocol.messages import (
    _MAYBE_SURROGATE,
    _SURROGATE,
    CLIENT_MESSAGES,
    DATA_OPTIONAL,
    MAX_REQUEST_ID_CHARS,
    ErrorData,
    _Data,
    _printable,
)

_REQUEST_ID = TypeAdapter(
    Annotated[
        str,
        StringConstraints(min_length=1, max_length=MAX_REQUEST_ID_CHARS),
        AfterValidator(_printable),
    ]
)


@dataclass(frozen=True, slots=True)
class Request:
    """One client message after the envelope is read; ``data`` not yet validated."""

    type: str
    data: Any
    request_id: str | None


def invalid(message: str, **details: Any) -> DomainError:
    return DomainError(ErrorCode.INVALID_MESSAGE, message, details or None)


# orjson reads an integer literal too big for 64 bits as a float; any such literal has 19 digits.
_LONG_NUMBER = re.compile(r"[0-9]{19}")


def _loads(text: str) -> Any:
    """``json.loads``, by orjson where the result is sure to be the same (several times faster).

    orjson refuses what the json module accepts (NaN, Infinity, 1e400, lone surrogates) and words
    its errors differently, so whatever it refuses is read again by the json module, whose
    result or error the protocol promises; a frame with a run of 19 digits goes there directly.
    """
    if _LONG_NUMBER.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def decode_envelope(text: str) -> Request:
    """Parse a text frame into its type, data and request id; raise INVALID_MESSAGE if malformed."""
    try:
        raw = _loads(text)
    except json.JSONDecodeError as exc:
        raise invalid(
            "malformed JSON", problem=exc.msg, line=exc.lineno, column=exc.colno
        ) from None
    except RecursionError:
        raise invalid("malformed JSON", problem="nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal of more than 4300 digits
        raise invalid("malformed JSON", problem=str(exc)[:200]) from None
    if not isinstance(raw, dict):
        raise invalid(
            "a message must be a JSON object",
            problem="expected an object",
            received=_json_kind(raw),
        )
    request_id = raw.get("requestId")
    if request_id is not None:
        try:
            request_id = _REQUEST_ID.validate_python(request_id, strict=True)
        except ValidationError:
            raise invalid(
                f"requestId must be 1-{MAX_REQUEST_ID_CHARS} printable characters",
                field="requestId",
            ) from None
    if _MAYBE_SURROGATE.search(text):
        bad = _lone_surrogate_at(raw)
        if bad is not None:
            raise invalid(
                "text must be valid UTF-8",
                field=bad,
                problem="contains a lone surrogate, which is not valid UTF-8",
            ).with_request_id(request_id)
    message_type = raw.get("type")
    if not isinstance(message_type, str):
        raise DomainError(
            ErrorCode.INVALID_MESSAGE, "missing message type", {"field": "type"}
        ).with_request_id(request_id)
    if message_type not in CLIENT_MESSAGES:
        raise DomainError(
            ErrorCode.INVALID_MESSAGE,
            "unknown message type",
            {"field": "type", "type": message_type[:64]},
        ).with_request_id(request_id)
    return Request(type=message_type, data=raw.get("data"), request_id=request_id)


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _lone_surrogate_at(message: dict[str, Any]) -> str | None:
    """The path (``data.message``, ``data.0.environmentId``) of the first string, or the object
    holding the first key, that has a lone surrogate; None when there is none.

    Iterative: the frame may nest as deep as the JSON parser allowed.
    """
    pending: list[tuple[str, Any]] = [("", message)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return path or "message"
        elif isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    return path or "message"
                pending.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            pending.extend((f"{path}.{index}", item) for index, item in enumerate(value))
    return None


def validate_data(message_type: str, data: Any) -> _Data:
    """Validate one payload of ``message_type``; raise INVALID_MESSAGE naming the problem."""
    model = CLIENT_MESSAGES[message_type]
    if data is None and message_type in DATA_OPTIONAL:
        data = {}
    if not isinstance(data, dict):
        raise invalid("data must be an object", field="data")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid("invalid data", errors=_describe(exc)) from None


def _describe(exc: ValidationError) -> list[dict[str, str]]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False)[:10]:
        field = ".".join(str(part) for part in error["loc"]) or "data"
        message = error["msg"].removeprefix("Value error, ")
        problems.append({"field": field, "problem": message})
    return problems


def encode(
    message_type: str, data: BaseModel | dict[str, Any], request_id: str | None = None
) -> str:
    """The text frame of one server message, ``data`` a model or its :func:`dump`.

    The one encoder of frames: replies, broadcasts and feeds all come out compact and with text
    unescaped (UTF-8), whoever sends them.
    """
    frame: dict[str, Any] = {"type": message_type, "data": dump(data)}
    if request_id is not None:
        frame["requestId"] = request_id
    return _dumps(frame)


# Types orjson would write where the json module raises: they go to the json module instead.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def _dumps(frame: dict[str, Any]) -> str:
    """``json.dumps(frame, separators=(",", ":"), ensure_ascii=False)``, by orjson where its text
    is the same (several times faster).

    The two differ in what orjson refuses (integers past 64 bits, keys that are not strings,
    lone surrogates), in floats below 1e-4 (orjson writes ``0.00001`` and ``1e-7``, the json
    module ``1e-05`` and ``1e-07``; every such difference has ``e-`` or ``0.0000`` in orjson's
    text) and in NaN and infinities (``null`` against ``NaN``; no frame holds them: the models
    refuse them, JSONB cannot store them). A frame with ``e-`` or ``0.0000`` anywhere is rare
    (a small float such as a voice command's confidence, or text like "e-mail") and is written
    by the json module.
    """
    try:
        text = orjson.dumps(frame, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        pass
    else:
        if b"e-" not in text and b"0.0000" not in text:
            return text.decode()
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def error_frame(error: DomainError, request_id: str | None = None) -> str:
    data = ErrorData(code=error.code, message=error.message, details=error.details)
    return encode("ERROR", data, request_id)


def dump(data: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """A frame's data as plain JSON-ready values (what receipts store and HTTP answers), from a
    model or already a dict. Optional fields without a value are left out; nullable ones stay."""
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    return data
