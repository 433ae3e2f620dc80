"""Backward compatibility of message schemas, and the guard over the committed schema files."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from events import topics
from events.contracts import ALL_MESSAGES
from events.schema_tools import (
    ASYNCAPI_PATH,
    INDEX_FILE,
    SCHEMA_DIR,
    Committed,
    Contract,
    asyncapi_problems,
    build_index,
    check,
    current_contracts,
    expected_files,
    incompatibilities,
    json_schema,
    load_committed,
    main,
    schema_problems,
)


def obj(required: tuple[str, ...] = (), **properties: Any) -> dict[str, Any]:
    """An object schema that refuses extra fields, as pydantic writes for extra='forbid'."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


INT = {"type": "integer"}
STR = {"type": "string"}
UUID = {"type": "string", "format": "uuid"}


# --- the rules, on handcrafted pairs -------------------------------------------------------------


def test_an_unchanged_schema_is_compatible() -> None:
    schema = obj(("id",), id=UUID, n=INT)
    assert incompatibilities(schema, copy.deepcopy(schema)) == []


def test_adding_an_optional_field_is_backward_compatible() -> None:
    old = obj(("id",), id=UUID)
    new = obj(("id",), id=UUID, note={**STR, "default": ""})
    assert incompatibilities(old, new) == []


def test_adding_a_required_field_is_incompatible() -> None:
    old = obj(("id",), id=UUID)
    new = obj(("id", "note"), id=UUID, note=STR)
    assert incompatibilities(old, new) == ["note: new required field (old data lacks it)"]


def test_removing_a_field_is_incompatible() -> None:
    old = obj(("id",), id=UUID, note=STR)
    new = obj(("id",), id=UUID)
    assert incompatibilities(old, new) == ["note: field was removed"]


def test_retyping_a_field_is_incompatible() -> None:
    old = obj(("n",), n=INT)
    new = obj(("n",), n=STR)
    assert incompatibilities(old, new) == ["n: type changed from integer to string"]


def test_widening_an_integer_to_a_number_is_compatible() -> None:
    assert incompatibilities(obj(n=INT), obj(n={"type": "number"})) == []


def test_narrowing_a_number_to_an_integer_is_incompatible() -> None:
    problems = incompatibilities(obj(n={"type": "number"}), obj(n=INT))
    assert problems == ["n: type changed from number to integer"]


def test_making_an_optional_field_required_is_incompatible() -> None:
    old = obj((), note=STR)
    new = obj(("note",), note=STR)
    assert incompatibilities(old, new) == ["note: optional field became required"]


def test_making_a_required_field_optional_is_compatible() -> None:
    assert incompatibilities(obj(("note",), note=STR), obj((), note=STR)) == []


def test_narrowing_an_enum_is_incompatible() -> None:
    old = obj(s={"type": "string", "enum": ["A", "B", "C"]})
    new = obj(s={"type": "string", "enum": ["A", "B"]})
    assert incompatibilities(old, new) == ["s: no longer accepts ['C']"]


def test_adding_an_enum_value_is_compatible() -> None:
    old = obj(s={"type": "string", "enum": ["A"]})
    new = obj(s={"type": "string", "enum": ["A", "B"]})
    assert incompatibilities(old, new) == []


def test_restricting_a_free_string_to_an_enum_is_incompatible() -> None:
    problems = incompatibilities(obj(s=STR), obj(s={"type": "string", "enum": ["A"]}))
    assert problems == ["s: now limited to ['A']"]


def test_changing_a_format_is_incompatible() -> None:
    old = obj(at={"type": "string", "format": "date"})
    new = obj(at={"type": "string", "format": "date-time"})
    assert incompatibilities(old, new) == ["at: format changed from 'date' to 'date-time'"]


def test_dropping_a_format_is_compatible() -> None:
    assert incompatibilities(obj(id=UUID), obj(id=STR)) == []


@pytest.mark.parametrize(
    ("old_field", "new_field", "expected"),
    [
        ({"maxLength": 64}, {"maxLength": 32}, "maxLength lowered from 64 to 32"),
        ({}, {"maxLength": 32}, "maxLength lowered from none to 32"),
        ({"minLength": 1}, {"minLength": 2}, "minLength raised from 1 to 2"),
        ({"minimum": 0}, {"minimum": 1}, "lower bound raised from 0 to 1"),
        ({"minimum": 0}, {"exclusiveMinimum": 0}, "lower bound raised from 0 to 0 (exclusive)"),
        ({"maximum": 10}, {"maximum": 9}, "upper bound lowered from 10 to 9"),
        ({}, {"pattern": "^[A-Z]+$"}, "pattern changed from None to '^[A-Z]+$'"),
        ({"pattern": "^a"}, {"pattern": "^b"}, "pattern changed from '^a' to '^b'"),
        ({}, {"multipleOf": 5}, "multipleOf changed from None to 5"),
    ],
)
def test_tightening_a_constraint_is_incompatible(
    old_field: dict[str, Any], new_field: dict[str, Any], expected: str
) -> None:
    problems = incompatibilities(obj(f={**INT, **old_field}), obj(f={**INT, **new_field}))
    assert problems == [f"f: {expected}"]


@pytest.mark.parametrize(
    ("old_field", "new_field"),
    [
        ({"maxLength": 32}, {"maxLength": 64}),
        ({"maxLength": 32}, {}),
        ({"minimum": 1}, {"minimum": 0}),
        ({"exclusiveMinimum": 0}, {"minimum": 0}),
        ({"maximum": 9}, {"maximum": 10}),
        ({"pattern": "^[A-Z]+$"}, {}),
        ({"multipleOf": 10}, {"multipleOf": 5}),
    ],
)
def test_widening_a_constraint_is_compatible(
    old_field: dict[str, Any], new_field: dict[str, Any]
) -> None:
    assert incompatibilities(obj(f={**INT, **old_field}), obj(f={**INT, **new_field})) == []


def test_array_limits_and_items_are_compared() -> None:
    old = obj(xs={"type": "array", "items": INT, "maxItems": 100})
    new = obj(xs={"type": "array", "items": STR, "maxItems": 10, "minItems": 1})
    assert incompatibilities(old, new) == [
        "xs: minItems raised from 0 to 1",
        "xs: maxItems lowered from 100 to 10",
        "xs[]: type changed from integer to string",
    ]


def test_making_a_nullable_field_non_nullable_is_incompatible() -> None:
    old = obj(p={"anyOf": [UUID, {"type": "null"}], "default": None})
    new = obj(p=UUID)
    assert incompatibilities(old, new) == ["p: null is no longer accepted"]


def test_making_a_field_nullable_is_compatible() -> None:
    old = obj(("p",), p=UUID)
    new = obj(("p",), p={"anyOf": [UUID, {"type": "null"}]})
    assert incompatibilities(old, new) == []


def test_a_change_inside_a_union_branch_is_found() -> None:
    old = obj(p={"anyOf": [{"type": "string", "maxLength": 9}, {"type": "null"}]})
    new = obj(p={"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}]})
    assert incompatibilities(old, new) == ["p: maxLength lowered from 9 to 5"]


def test_refusing_extra_fields_that_were_accepted_is_incompatible() -> None:
    old = {"type": "object", "additionalProperties": True}
    new = {"type": "object", "additionalProperties": False}
    assert incompatibilities(old, new) == ["(root): extra fields are no longer accepted"]


def test_descriptions_titles_and_defaults_do_not_matter() -> None:
    old = obj(n={**INT, "title": "N", "description": "old words", "default": 1})
    new = obj(n={**INT, "title": "Count", "description": "new words", "default": 2})
    assert incompatibilities(old, new) == []


def test_an_unknown_constraint_is_reported_rather_than_assumed_harmless() -> None:
    problems = incompatibilities(obj(n=INT), obj(n={**INT, "not": {"const": 3}}))
    assert problems == ["n: keyword 'not' changed, so old data may no longer fit"]


MONEY = obj(
    ("amount", "currency"),
    amount={"type": "integer", "minimum": 0},
    currency={"type": "string", "pattern": "^[A-Z]{3}$"},
)


def with_money(money: dict[str, Any]) -> dict[str, Any]:
    line = obj(("sku", "unit_price"), sku=STR, unit_price={"$ref": "#/$defs/Money"})
    return {
        **obj(
            ("total", "lines"),
            total={"$ref": "#/$defs/Money"},
            lines={"type": "array", "items": {"$ref": "#/$defs/Line"}},
        ),
        "$defs": {"Money": money, "Line": line},
    }


def test_changes_inside_referenced_models_are_found_and_named_by_path() -> None:
    stricter = copy.deepcopy(MONEY)
    stricter["properties"]["amount"]["minimum"] = 1
    assert incompatibilities(with_money(MONEY), with_money(stricter)) == [
        "lines[].unit_price.amount: lower bound raised from 0 to 1",
        "total.amount: lower bound raised from 0 to 1",
    ]


def test_recursive_models_are_compared_without_looping() -> None:
    def tree(child_limit: int) -> dict[str, Any]:
        node = obj(
            ("name",),
            name={"type": "string", "maxLength": child_limit},
            children={"type": "array", "items": {"$ref": "#/$defs/Node"}},
        )
        return {"$ref": "#/$defs/Node", "$defs": {"Node": node}}

    assert incompatibilities(tree(10), tree(10)) == []
    assert incompatibilities(tree(10), tree(5)) == ["name: maxLength lowered from 10 to 5"]


class _PriceV1(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    amount: int = Field(ge=0)
    currency: str


class _ItemV1(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    sku: str = Field(max_length=64)
    price: _PriceV1


class _PriceV2(_PriceV1):
    note: str = ""


class _ItemV2(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    sku: str = Field(max_length=32)
    price: _PriceV2
    gift: bool = False


def test_real_pydantic_models_are_judged_by_the_same_rules() -> None:
    problems = incompatibilities(json_schema(_ItemV1), json_schema(_ItemV2))
    assert problems == ["sku: maxLength lowered from 64 to 32"]


# --- the committed files -------------------------------------------------------------------------


def test_committed_schemas_match_the_current_models() -> None:
    """The guard: fails when a model changed without `export`, or changed incompatibly."""
    assert check() == []


def test_check_command_exits_zero_on_the_committed_tree(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    assert "up to date" in capsys.readouterr().out


def current_as_committed(contracts: list[Contract]) -> Committed:
    return Committed(
        schemas={c.type_name: {c.schema_version: copy.deepcopy(c.schema)} for c in contracts},
        index=build_index(contracts),
    )


def changed(contracts: list[Contract], type_name: str, **changes: Any) -> list[Contract]:
    return [dataclasses.replace(c, **changes) if c.type_name == type_name else c for c in contracts]


def test_an_incompatible_model_change_names_the_type_and_the_field() -> None:
    contracts = current_contracts()
    committed = current_as_committed(contracts)
    placed = next(c for c in contracts if c.type_name == "OrderPlaced")
    narrower = copy.deepcopy(placed.schema)
    narrower["properties"]["customer_id"]["maxLength"] = 10
    problems = schema_problems(committed, changed(contracts, "OrderPlaced", schema=narrower))
    assert problems == [
        "OrderPlaced is not backward compatible with OrderPlaced.v1.json: "
        "customer_id: maxLength lowered from 100 to 10"
    ]


def test_a_compatible_change_without_regenerating_is_reported_as_stale() -> None:
    contracts = current_contracts()
    committed = current_as_committed(contracts)
    confirmed = next(c for c in contracts if c.type_name == "OrderConfirmed")
    wider = copy.deepcopy(confirmed.schema)
    wider["properties"]["note"] = {"type": "string", "default": ""}
    problems = schema_problems(committed, changed(contracts, "OrderConfirmed", schema=wider))
    assert len(problems) == 1
    assert problems[0].startswith("OrderConfirmed: OrderConfirmed.v1.json is stale")


def test_a_removed_message_type_is_reported() -> None:
    contracts = current_contracts()
    committed = current_as_committed(contracts)
    committed.schemas["ParcelShipped"] = {1: obj()}
    problems = schema_problems(committed, contracts)
    assert len(problems) == 1
    assert problems[0].startswith("ParcelShipped: message type was removed")


def test_a_new_schema_version_must_still_read_every_older_one() -> None:
    contracts = current_contracts()
    committed = current_as_committed(contracts)
    restock = next(c for c in contracts if c.type_name == "Restock")
    v2 = copy.deepcopy(restock.schema)
    del v2["properties"]["reason"]
    problems = schema_problems(
        committed, changed(contracts, "Restock", schema=v2, schema_version=2)
    )
    assert "Restock is not backward compatible with Restock.v1.json: reason: field was removed" in (
        problems
    )
    assert "Restock: Restock.v2.json is missing; run `python -m events.schema_tools export`" in (
        problems
    )


def test_a_committed_version_newer_than_the_model_is_reported() -> None:
    contracts = current_contracts()
    committed = current_as_committed(contracts)
    committed.schemas["Restock"][2] = committed.schemas["Restock"][1]
    problems = schema_problems(committed, contracts)
    assert problems == [
        "Restock: Restock.v2.json is newer than the model's schema_version 1; versions never go back"
    ]


def test_moving_a_type_to_another_topic_is_reported() -> None:
    contracts = current_contracts()
    committed = current_as_committed(contracts)
    problems = schema_problems(
        committed, changed(contracts, "OrderPlaced", topic=topics.INVENTORY_EVENTS)
    )
    assert problems[0] == (
        "OrderPlaced: topic changed from 'order.events' to 'inventory.events'; "
        "consumers of the old one stop seeing it"
    )


def test_exported_files_are_deterministic_sorted_and_end_in_a_newline() -> None:
    first, second = expected_files(current_contracts()), expected_files(current_contracts())
    assert first == second
    for name, text in first.items():
        assert text.endswith("}\n"), name
        assert text == json.dumps(
            json.loads(text), indent=2, sort_keys=True, ensure_ascii=False
        ) + ("\n")


def test_the_index_lists_every_message_with_topic_kind_version_and_file() -> None:
    index = json.loads((SCHEMA_DIR / INDEX_FILE).read_text(encoding="utf-8"))
    assert index["envelope"] == {"file": "Envelope.v1.json", "schema_version": 1}
    assert set(index["messages"]) == {m.type_name() for m in ALL_MESSAGES}
    for model in ALL_MESSAGES:
        entry = index["messages"][model.type_name()]
        assert entry == {
            "file": f"{model.type_name()}.v{model.schema_version}.json",
            "kind": model.kind,
            "schema_version": model.schema_version,
            "topic": model.topic,
        }
        assert (SCHEMA_DIR / entry["file"]).is_file()


def test_no_stray_files_sit_among_the_schemas() -> None:
    assert load_committed().stray_files == ()


# --- AsyncAPI ------------------------------------------------------------------------------------


def committed_asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(ASYNCAPI_PATH.read_text(encoding="utf-8"))
    return document


def test_the_asyncapi_document_parses_and_every_reference_resolves() -> None:
    assert asyncapi_problems(committed_asyncapi()) == []


def test_every_topic_and_its_dead_letter_sibling_is_an_asyncapi_channel() -> None:
    channels = {c["address"]: c for c in committed_asyncapi()["channels"].values()}
    for spec in topics.all_topics():
        binding = channels[spec.name]["bindings"]["kafka"]
        assert binding["partitions"] == spec.partitions
        assert binding["topicConfiguration"]["cleanup.policy"] == [spec.cleanup_policy]
        assert binding["topicConfiguration"]["retention.ms"] == spec.retention_ms
        if spec.kind != "dlq":
            assert channels[spec.name]["x-dlq"] == spec.dlq
            assert spec.dlq in channels


def test_every_message_is_sent_to_its_topic_with_its_schema_and_headers() -> None:
    document = committed_asyncapi()
    messages = document["components"]["messages"]
    for model in ALL_MESSAGES:
        name = model.type_name()
        operation = document["operations"][f"send{name}"]
        channel_id = operation["channel"]["$ref"].rsplit("/", 1)[1]
        assert document["channels"][channel_id]["address"] == model.topic
        envelope, specialised = messages[name]["payload"]["allOf"]
        assert envelope == {"$ref": "#/components/schemas/Envelope"}
        assert specialised["properties"]["payload"] == {"$ref": f"#/components/schemas/{name}"}
        assert set(messages[name]["headers"]["required"]) == {
            "event_id",
            "event_type",
            "correlation_id",
        }


def test_asyncapi_problems_finds_a_dangling_reference() -> None:
    document = committed_asyncapi()
    del document["components"]["schemas"]["Money"]
    assert "dangling reference #/components/schemas/Money" in asyncapi_problems(document)
