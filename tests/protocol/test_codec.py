"""The codec reads and writes JSON exactly as the json module does, whichever library runs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol
from protocol.errors import DomainError

FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.floats(-1e-3, 1e-3)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | FLOATS | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


def reference(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize(
    "value",
    [
        0.93,
        1e-05,  # orjson would write 0.00001
        1.5e-07,  # orjson would write 1.5e-7
        1e16,
        2**64,  # past orjson's 64 bits
        -(2**63) - 1,
        '🚀 naïve \u2028 \x1f \x7f " \\ e-mail 0.00001',
        {"nested": [1, "two", None, True, {"3": 4.5}]},
    ],
)
def test_a_frame_is_byte_for_byte_what_the_json_module_writes(value):
    data = {"value": value}
    assert protocol.encode("X", data, "r-1") == reference(
        {"type": "X", "data": data, "requestId": "r-1"}
    )


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_any_frame_is_written_as_the_json_module_writes_it(value):
    data = {"value": value}
    assert protocol.encode("X", data) == reference({"type": "X", "data": data})


@pytest.mark.parametrize(
    "literal",
    ["18446744073709551616", "-9223372036854775809", "1" * 40, "NaN", "-Infinity", "1e400"],
)
def test_numbers_past_64_bits_and_non_finite_ones_are_read_as_the_json_module_reads_them(
    literal,
):
    text = f'{{"type":"HEARTBEAT","data":{{"n":{literal},"s":"{"9" * 25}"}}}}'
    data = protocol.decode_envelope(text).data
    assert repr(data) == repr(json.loads(text)["data"])


def test_a_lone_surrogate_escape_is_read_and_then_refused():
    with pytest.raises(DomainError) as refused:
        protocol.decode_envelope('{"type":"HEARTBEAT","data":{"x":"\\ud800"}}')
    assert refused.value.message == "text must be valid UTF-8"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | VALUES.map(json.dumps))
def test_malformed_json_is_described_as_the_json_module_describes_it(text):
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        expected: dict[str, Any] | None = {
            "problem": exc.msg,
            "line": exc.lineno,
            "column": exc.colno,
        }
    else:
        expected = None
    try:
        protocol.decode_envelope(text)
    except DomainError as exc:
        if exc.message == "malformed JSON":
            assert exc.details == expected
            return
    assert expected is None
