"""Hypothesis strategies for records a consumer must refuse: random bytes, broken JSON, wrong
types, unknown event types, deep nesting, invalid UTF-8 and huge payloads, each made from a valid
encoded envelope so that most of the record still looks right."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import strategies as st

from events.envelope import MAX_RECORD_BYTES

# Under the broker's default max.message.bytes (1 MiB), with room for the dead-letter headers.
HUGE_MAX = 900_000

ENVELOPE_FIELDS = (
    "event_id",
    "type",
    "schema_version",
    "occurred_at",
    "producer",
    "correlation_id",
    "causation_id",
    "payload",
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


def _wrong_type(value: Any) -> st.SearchStrategy[Any]:
    """A JSON value of another type than `value` (a number for a string, a string for a number)."""
    if isinstance(value, bool):
        return st.sampled_from([0, 1, "true", None, [], {}])
    if isinstance(value, int):
        return st.sampled_from([str(value), float(value), value + 0.5, True, None, [value], {}])
    if isinstance(value, str):
        return st.sampled_from([1, 0.5, True, None, [value], {"v": value}])
    if isinstance(value, list):
        return st.sampled_from([{}, "x", 1, None])
    if isinstance(value, dict):
        return st.sampled_from([[], "x", 1, None, True])
    return st.sampled_from([[], {}, 1.5])


def random_bytes() -> st.SearchStrategy[bytes]:
    return st.binary(max_size=300)


@st.composite
def truncated(draw: st.DrawFn, valid: bytes) -> bytes:
    return valid[: draw(st.integers(min_value=0, max_value=len(valid) - 1))]


@st.composite
def invalid_utf8(draw: st.DrawFn, valid: bytes) -> bytes:
    at = draw(st.integers(min_value=0, max_value=len(valid)))
    junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]))
    return valid[:at] + junk + valid[at:]


@st.composite
def not_an_envelope(draw: st.DrawFn) -> bytes:
    return orjson.dumps(draw(json_values))


@st.composite
def envelope_field_of_wrong_type(draw: st.DrawFn, valid: bytes) -> bytes:
    data = orjson.loads(valid)
    field = draw(st.sampled_from([f for f in ENVELOPE_FIELDS if f in data]))
    data[field] = draw(_wrong_type(data[field]))
    return orjson.dumps(data)


@st.composite
def envelope_field_missing(draw: st.DrawFn, valid: bytes) -> bytes:
    data = orjson.loads(valid)
    del data[draw(st.sampled_from([f for f in ENVELOPE_FIELDS if f != "causation_id"]))]
    return orjson.dumps(data)


@st.composite
def payload_field_of_wrong_type(draw: st.DrawFn, valid: bytes) -> bytes:
    data = orjson.loads(valid)
    field = draw(st.sampled_from(sorted(data["payload"])))
    data["payload"][field] = draw(_wrong_type(data["payload"][field]))
    return orjson.dumps(data)


@st.composite
def payload_with_unknown_field(draw: st.DrawFn, valid: bytes) -> bytes:
    data = orjson.loads(valid)
    name = draw(st.text(min_size=1, max_size=20).filter(lambda n: n not in data["payload"]))
    data["payload"][name] = draw(json_values)
    return orjson.dumps(data)


@st.composite
def unknown_event_type(draw: st.DrawFn, valid: bytes, known: frozenset[str]) -> bytes:
    data = orjson.loads(valid)
    data["type"] = draw(st.text(max_size=40).filter(lambda t: t not in known))
    return orjson.dumps(data)


@st.composite
def newer_schema_version(draw: st.DrawFn, valid: bytes) -> bytes:
    data = orjson.loads(valid)
    data["schema_version"] = draw(st.integers(min_value=2, max_value=2**62))
    return orjson.dumps(data)


@st.composite
def deeply_nested(draw: st.DrawFn, valid: bytes) -> bytes:
    depth = draw(st.integers(min_value=255, max_value=5000))
    nest = b'{"a":' * depth + b"1" + b"}" * depth
    return valid[:-1] + b',"nested":' + nest + b"}"


@st.composite
def huge(draw: st.DrawFn, valid: bytes) -> bytes:
    """A well-formed envelope padded past the decoder's limit (but under the broker's)."""
    size = draw(st.integers(min_value=MAX_RECORD_BYTES + 1, max_value=HUGE_MAX))
    data = orjson.loads(valid)
    data["payload"]["padding"] = ""
    shell = len(orjson.dumps(data))
    data["payload"]["padding"] = "x" * max(0, size - shell)
    return orjson.dumps(data)


def corrupt(valid: bytes, known_types: frozenset[str]) -> st.SearchStrategy[bytes]:
    """Any one kind of corruption of a valid encoded envelope."""
    return st.one_of(
        random_bytes(),
        truncated(valid),
        invalid_utf8(valid),
        not_an_envelope(),
        envelope_field_of_wrong_type(valid),
        envelope_field_missing(valid),
        payload_field_of_wrong_type(valid),
        payload_with_unknown_field(valid),
        unknown_event_type(valid, known_types),
        newer_schema_version(valid),
        deeply_nested(valid),
        huge(valid),
    )
