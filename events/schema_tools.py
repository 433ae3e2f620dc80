"""JSON Schemas and the AsyncAPI document for every message, and the guard that keeps them honest.

    python -m events.schema_tools export    # write events/schemas/*.json; refuses breaking changes
    python -m events.schema_tools asyncapi  # write events/asyncapi.yaml
    python -m events.schema_tools check     # exit 1 if either is stale or a change breaks old data

Event topics keep their records forever, so the model of today must read every record ever written:
data valid under any committed schema of a type must stay valid under the current model. That is the
one rule behind `incompatibilities`; the committed files are the baseline it compares against.

The other direction, consumers still on the old model reading new records, is only protected against
removed fields. Models refuse unknown fields, so a new optional field, a widened limit or a new enum
value must reach every consumer before any producer starts using it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from events import topics
from events.contracts import ALL_MESSAGES
from events.envelope import Envelope
from events.messages import Message

Schema = dict[str, Any]

EVENTS_DIR = Path(__file__).resolve().parent
SCHEMA_DIR = EVENTS_DIR / "schemas"
ASYNCAPI_PATH = EVENTS_DIR / "asyncapi.yaml"
INDEX_FILE = "index.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
ENVELOPE_SCHEMA_VERSION = 1
KAFKA_BINDING_VERSION = "0.5.0"

EXPORT_HINT = "run `python -m events.schema_tools export`"
ASYNCAPI_HINT = "run `python -m events.schema_tools asyncapi`"

_SCHEMA_FILE = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9]*)\.v(?P<version>[1-9][0-9]*)\.json$")


# --- backward compatibility ----------------------------------------------------------------------

# Keywords that describe a value without constraining it.
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly"}
    | {"$comment", "$schema", "$id", "$defs", "definitions"}
)
_LOWER_COUNTS = ("minLength", "minItems", "minProperties")
_UPPER_COUNTS = ("maxLength", "maxItems", "maxProperties")
_HANDLED = frozenset(
    {"$ref", "type", "enum", "const", "format", "pattern", "anyOf", "oneOf"}
    | {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "multipleOf", "uniqueItems"}
    | {"properties", "required", "additionalProperties", "items", "prefixItems"}
    | set(_LOWER_COUNTS)
    | set(_UPPER_COUNTS)
)


def incompatibilities(old: Schema, new: Schema) -> list[str]:
    """Reasons some value valid under `old` may be refused by `new`; empty when none can be.

    Both are JSON Schemas as pydantic writes them, with local `#/$defs/...` references. The check is
    conservative: a change it cannot prove harmless (a new pattern, an unknown keyword) is reported.
    A field dropped from the new schema is reported even where the new schema would tolerate it,
    because consumers still on the old model require it.
    """
    return _Comparison(old, new).compare(old, new, "")


@dataclass
class _Comparison:
    old_root: Schema
    new_root: Schema
    _in_progress: set[tuple[str, str]] = field(default_factory=set)

    def compare(self, old: Any, new: Any, path: str) -> list[str]:
        ref_pair = (_ref_of(old), _ref_of(new))
        if ref_pair in self._in_progress:  # a recursive model: this pair is being compared already
            return []
        if ref_pair != ("", ""):
            self._in_progress.add(ref_pair)
        try:
            return self._compare_resolved(
                _resolve(old, self.old_root), _resolve(new, self.new_root), path
            )
        finally:
            self._in_progress.discard(ref_pair)

    def _compare_resolved(self, old: Any, new: Any, path: str) -> list[str]:
        """Every old alternative (a union's branch, or the schema itself) must fit a new one."""
        olds = [o for o in _alternatives(old, self.old_root) if o is not False]
        news = [n for n in _alternatives(new, self.new_root) if n is not False]
        if not olds or any(n is True for n in news):
            return []
        if not news:
            return [f"{_where(path)}: no value is accepted any more"]
        problems: list[str] = []
        for alternative in olds:
            old_alt: Schema = {} if alternative is True else alternative
            candidates = [n for n in news if _types_fit(old_alt, n)]
            if not candidates:
                if len(olds) == len(news) == 1:
                    change = f"type changed from {_type_text(old_alt)} to {_type_text(news[0])}"
                else:
                    change = f"{_describe(old_alt)} is no longer accepted"
                problems.append(f"{_where(path)}: {change}")
                continue
            outcomes = [self._compare_single(old_alt, n, path) for n in candidates]
            if all(outcomes):
                closest: list[str] = min(outcomes, key=len)
                problems += closest
        return problems

    def _compare_single(self, old: Schema, new: Schema, path: str) -> list[str]:
        where = _where(path)
        problems = _compare_values(old, new, where)
        problems += _compare_bounds(old, new, where)
        problems += self._compare_object(old, new, path)
        problems += self._compare_array(old, new, path)
        problems += [
            f"{where}: keyword {key!r} changed, so old data may no longer fit"
            for key in sorted(new)
            if key not in _HANDLED
            and key not in _ANNOTATIONS
            and not key.startswith("x-")
            and new[key] != old.get(key)
        ]
        return problems

    def _compare_object(self, old: Schema, new: Schema, path: str) -> list[str]:
        old_props: dict[str, Any] = old.get("properties", {})
        new_props: dict[str, Any] = new.get("properties", {})
        old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
        old_extra = old.get("additionalProperties", True)
        new_extra = new.get("additionalProperties", True)
        problems: list[str] = []
        for name in sorted(old_props):
            if name not in new_props:
                problems.append(f"{_join(path, name)}: field was removed")
            else:
                problems += self.compare(old_props[name], new_props[name], _join(path, name))
        for name in sorted(new_required - old_required):
            if name in old_props:
                problems.append(f"{_join(path, name)}: optional field became required")
            else:
                problems.append(f"{_join(path, name)}: new required field (old data lacks it)")
        if old_extra is not False:
            for name in sorted(set(new_props) - set(old_props)):
                problems += self.compare(old_extra, new_props[name], _join(path, name))
            if new_extra is False:
                problems.append(f"{_where(path)}: extra fields are no longer accepted")
            else:
                problems += self.compare(old_extra, new_extra, _join(path, "*"))
        return problems

    def _compare_array(self, old: Schema, new: Schema, path: str) -> list[str]:
        problems: list[str] = []
        old_prefix: list[Any] = old.get("prefixItems", [])
        new_prefix: list[Any] = new.get("prefixItems", [])
        old_items, new_items = old.get("items", True), new.get("items", True)
        for i in range(max(len(old_prefix), len(new_prefix))):
            old_item = old_prefix[i] if i < len(old_prefix) else old_items
            new_item = new_prefix[i] if i < len(new_prefix) else new_items
            problems += self.compare(old_item, new_item, f"{path}[{i}]")
        if "items" in new:
            problems += self.compare(old_items, new_items, f"{path}[]")
        return problems


def _compare_values(old: Schema, new: Schema, where: str) -> list[str]:
    problems: list[str] = []
    old_values, new_values = _allowed_values(old), _allowed_values(new)
    if new_values is not None:
        if old_values is None:
            problems.append(f"{where}: now limited to {new_values}")
        elif dropped := [v for v in old_values if v not in new_values]:
            problems.append(f"{where}: no longer accepts {dropped}")
    for key in ("format", "pattern"):
        if key in new and old.get(key) != new[key]:
            problems.append(f"{where}: {key} changed from {old.get(key)!r} to {new[key]!r}")
    return problems


def _compare_bounds(old: Schema, new: Schema, where: str) -> list[str]:
    problems: list[str] = []
    for key in _LOWER_COUNTS:
        if new.get(key, 0) > old.get(key, 0):
            problems.append(f"{where}: {key} raised from {old.get(key, 0)} to {new[key]}")
    for key in _UPPER_COUNTS:
        if key in new and (key not in old or new[key] < old[key]):
            problems.append(f"{where}: {key} lowered from {old.get(key, 'none')} to {new[key]}")
    old_low, new_low = (
        _bound(old, "minimum", "exclusiveMinimum"),
        _bound(new, "minimum", "exclusiveMinimum"),
    )
    if new_low is not None and (old_low is None or new_low > old_low):
        problems.append(
            f"{where}: lower bound raised from {_bound_text(old_low)} to {_bound_text(new_low)}"
        )
    old_high = _bound(old, "maximum", "exclusiveMaximum", upper=True)
    new_high = _bound(new, "maximum", "exclusiveMaximum", upper=True)
    if new_high is not None and (old_high is None or new_high < old_high):
        problems.append(
            f"{where}: upper bound lowered from {_bound_text(old_high)} to {_bound_text(new_high)}"
        )
    if "multipleOf" in new and not (
        "multipleOf" in old and old["multipleOf"] % new["multipleOf"] == 0
    ):
        problems.append(
            f"{where}: multipleOf changed from {old.get('multipleOf')} to {new['multipleOf']}"
        )
    if new.get("uniqueItems") and not old.get("uniqueItems"):
        problems.append(f"{where}: items must now be unique")
    return problems


def _bound(
    schema: Schema, inclusive: str, exclusive: str, *, upper: bool = False
) -> tuple[float, int] | None:
    """A bound as a sortable pair: an exclusive bound is a hair tighter than an inclusive one."""
    bounds: list[tuple[float, int]] = []
    hair = -1 if upper else 1
    if inclusive in schema:
        bounds.append((schema[inclusive], 0))
    if exclusive in schema:
        bounds.append((schema[exclusive], hair))
    if not bounds:
        return None
    return min(bounds) if upper else max(bounds)


def _bound_text(bound: tuple[float, int] | None) -> str:
    if bound is None:
        return "none"
    value, hair = bound
    return f"{value} (exclusive)" if hair else str(value)


def _resolve(schema: Any, root: Schema) -> Any:
    """Follow `$ref`s to local definitions; keywords beside a `$ref` refine its target."""
    seen: set[str] = set()
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        if ref in seen:
            raise ValueError(f"reference cycle through {ref!r}")
        seen.add(ref)
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**_pointer(root, ref), **siblings}
    return schema


def _pointer(document: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        raise ValueError(f"only local references are supported, not {ref!r}")
    target = document
    for part in ref[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        try:
            target = target[int(part)] if isinstance(target, list) else target[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ValueError(f"unresolvable reference {ref!r}") from None
    return target


def _ref_of(schema: Any) -> str:
    return str(schema.get("$ref", "")) if isinstance(schema, dict) else ""


def _alternatives(schema: Any, root: Schema) -> list[Any]:
    """A union's branches, resolved and flattened; anything else is its own single alternative."""
    schema = _resolve(schema, root)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema, dict) and key in schema:
            rest = {k: v for k, v in schema.items() if k != key}
            return [
                alternative
                for branch in schema[key]
                for alternative in _alternatives({**rest, **_resolve(branch, root)}, root)
            ]
    return [True if schema == {} else schema]


def _json_type(value: Any) -> str:
    for python_type, name in (
        (bool, "boolean"),
        (int, "integer"),
        (float, "number"),
        (str, "string"),
        (list, "array"),
        (dict, "object"),
    ):
        if isinstance(value, python_type):
            return name
    return "null"


def _allowed_values(schema: Schema) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    if "enum" in schema:
        return list(schema["enum"])
    return None


def _types(schema: Schema) -> frozenset[str] | None:
    declared = schema.get("type")
    if isinstance(declared, str):
        return frozenset({declared})
    if isinstance(declared, list):
        return frozenset(declared)
    values = _allowed_values(schema)
    return None if values is None else frozenset(_json_type(v) for v in values)


def _types_fit(old: Schema, new: Schema) -> bool:
    new_types = _types(new)
    if new_types is None:
        return True
    old_types = _types(old)
    if old_types is None:
        return False
    return all(t in new_types or (t == "integer" and "number" in new_types) for t in old_types)


def _type_text(schema: Schema) -> str:
    types = _types(schema)
    return "any" if types is None else "|".join(sorted(types))


def _describe(schema: Schema) -> str:
    values = _allowed_values(schema)
    return f"value {values[0]!r}" if values and len(values) == 1 else _type_text(schema)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _where(path: str) -> str:
    return path or "(root)"


# --- the contracts as files ----------------------------------------------------------------------


@dataclass(frozen=True)
class Contract:
    """One type's current JSON Schema and where it travels."""

    type_name: str
    kind: str
    schema_version: int
    topic: str | None
    schema: Schema

    @property
    def file_name(self) -> str:
        return schema_file_name(self.type_name, self.schema_version)


@dataclass(frozen=True)
class Committed:
    """What is in events/schemas: every version of every type's schema, and the index."""

    schemas: dict[str, dict[int, Schema]]
    index: Any
    stray_files: tuple[str, ...] = ()


def schema_file_name(type_name: str, version: int) -> str:
    return f"{type_name}.v{version}.json"


def json_schema(model: type[BaseModel]) -> Schema:
    return {"$schema": DIALECT, **model.model_json_schema()}


def current_contracts(messages: Iterable[type[Message]] = ALL_MESSAGES) -> list[Contract]:
    envelope = Contract(
        "Envelope", "envelope", ENVELOPE_SCHEMA_VERSION, None, json_schema(Envelope)
    )
    return [envelope] + [
        Contract(m.type_name(), m.kind, m.schema_version, m.topic, json_schema(m)) for m in messages
    ]


def build_index(contracts: Sequence[Contract]) -> Schema:
    envelope = next(c for c in contracts if c.kind == "envelope")
    return {
        "envelope": {"file": envelope.file_name, "schema_version": envelope.schema_version},
        "messages": {
            c.type_name: {
                "file": c.file_name,
                "kind": c.kind,
                "schema_version": c.schema_version,
                "topic": c.topic,
            }
            for c in contracts
            if c.kind != "envelope"
        },
    }


def render_json(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files(contracts: Sequence[Contract]) -> dict[str, str]:
    files = {c.file_name: render_json(c.schema) for c in contracts}
    files[INDEX_FILE] = render_json(build_index(contracts))
    return files


def load_committed(directory: Path = SCHEMA_DIR) -> Committed:
    schemas: dict[str, dict[int, Schema]] = {}
    index: Any = None
    stray: list[str] = []
    for path in sorted(directory.glob("*")) if directory.is_dir() else []:
        if path.name == INDEX_FILE:
            index = _read_json(path)
        elif match := _SCHEMA_FILE.match(path.name):
            versions = schemas.setdefault(match["name"], {})
            versions[int(match["version"])] = _read_json(path)
        else:
            stray.append(path.name)
    return Committed(schemas, index, tuple(stray))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); restore it from git") from None


def breaking_changes(committed: Committed, contracts: Sequence[Contract]) -> list[str]:
    """Changes that stop the current models reading committed data, or old consumers working."""
    current = {c.type_name: c for c in contracts}
    problems = [
        f"{name}: message type was removed, but records of it may be in the log forever; keep the "
        "model, or drop its schemas deliberately with `export --allow-breaking`"
        for name in sorted(committed.schemas.keys() - current.keys())
    ]
    for contract in contracts:
        for version, old in sorted(committed.schemas.get(contract.type_name, {}).items()):
            file_name = schema_file_name(contract.type_name, version)
            if version > contract.schema_version:
                problems.append(
                    f"{contract.type_name}: {file_name} is newer than the model's schema_version "
                    f"{contract.schema_version}; versions never go back"
                )
                continue
            problems += [
                f"{contract.type_name} is not backward compatible with {file_name}: {reason}"
                for reason in incompatibilities(old, contract.schema)
            ]
    old_messages = committed.index.get("messages", {}) if isinstance(committed.index, dict) else {}
    for contract in contracts:
        before = old_messages.get(contract.type_name)
        if not isinstance(before, dict):
            continue
        for key in ("kind", "topic"):
            if key in before and before[key] != getattr(contract, key):
                problems.append(
                    f"{contract.type_name}: {key} changed from {before[key]!r} to "
                    f"{getattr(contract, key)!r}; consumers of the old one stop seeing it"
                )
    return problems


def schema_problems(committed: Committed, contracts: Sequence[Contract]) -> list[str]:
    """All that `check` finds wrong with the committed schemas: breaking changes, then staleness."""
    problems = breaking_changes(committed, contracts)
    for contract in contracts:
        versions = committed.schemas.get(contract.type_name, {})
        if contract.schema_version not in versions:
            problems.append(f"{contract.type_name}: {contract.file_name} is missing; {EXPORT_HINT}")
        elif versions[contract.schema_version] != contract.schema and not incompatibilities(
            versions[contract.schema_version], contract.schema
        ):
            problems.append(
                f"{contract.type_name}: {contract.file_name} is stale (the model changed "
                f"compatibly); {EXPORT_HINT}"
            )
    if committed.index != build_index(contracts):
        problems.append(f"{INDEX_FILE} is stale or missing; {EXPORT_HINT}")
    problems += [f"unexpected file events/schemas/{name}" for name in committed.stray_files]
    return problems


def export_schemas(directory: Path = SCHEMA_DIR, *, allow_breaking: bool = False) -> list[str]:
    """Write the current schemas and index, keeping older versions as the baseline; list changes.

    Refuses breaking changes unless told, because writing them would erase the evidence.
    """
    contracts = current_contracts()
    committed = load_committed(directory)
    problems = breaking_changes(committed, contracts)
    if problems and not allow_breaking:
        raise BreakingChange(problems)
    directory.mkdir(parents=True, exist_ok=True)
    changed: list[str] = []
    for file_name, content in expected_files(contracts).items():
        path = directory / file_name
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
            changed.append(file_name)
    if allow_breaking:
        for file_name in _broken_baselines(committed, contracts):
            (directory / file_name).unlink()
            changed.append(f"{file_name} (removed)")
    return changed


def _broken_baselines(committed: Committed, contracts: Sequence[Contract]) -> list[str]:
    """Committed schema files the current models contradict: removed types, other versions."""
    current = {c.type_name: c for c in contracts}
    broken: list[str] = []
    for name, versions in sorted(committed.schemas.items()):
        contract = current.get(name)
        for version, old in sorted(versions.items()):
            if (
                contract is None
                or version > contract.schema_version
                or (version < contract.schema_version and incompatibilities(old, contract.schema))
            ):
                broken.append(schema_file_name(name, version))
    return broken


class BreakingChange(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- AsyncAPI ------------------------------------------------------------------------------------

_HEADERS_SCHEMA_NOTE = "Copies of envelope fields, so tools can filter without parsing JSON."


def asyncapi_document() -> Schema:
    """An AsyncAPI 3.0 description of every topic, the messages sent to it and their schemas."""
    by_topic: dict[str, list[type[Message]]] = {}
    for message in ALL_MESSAGES:
        by_topic.setdefault(message.topic, []).append(message)
    refs, shared = models_json_schema(
        [(m, "validation") for m in (Envelope, *ALL_MESSAGES)],
        ref_template="#/components/schemas/{model}",
    )
    schema_ref = {model: ref["$ref"] for (model, _mode), ref in refs.items()}
    sources = {t.dlq: t.name for t in topics.all_topics() if t.kind != "dlq"}

    channels: Schema = {}
    operations: Schema = {}
    for spec in topics.all_topics():
        channel_id = _channel_id(spec.name)
        if spec.kind == "dlq":
            names = ["DeadLetter"]
            description = f"Dead letters from {sources[spec.name]}, with headers saying why."
        else:
            names = [m.type_name() for m in by_topic.get(spec.name, [])]
            description = _TOPIC_DESCRIPTIONS[spec.kind]
        channel: Schema = {
            "address": spec.name,
            "title": spec.name,
            "description": description,
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
            "bindings": {
                "kafka": {
                    "topic": spec.name,
                    "partitions": spec.partitions,
                    "topicConfiguration": {
                        "cleanup.policy": [spec.cleanup_policy],
                        "retention.ms": spec.retention_ms,
                    },
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
            "x-kind": spec.kind,
            "x-topic-config": spec.config(),
        }
        if spec.kind == "dlq":
            channel["x-dead-letters-of"] = sources[spec.name]
        elif spec.consumed:
            channel["x-dlq"] = spec.dlq
        channels[channel_id] = channel
        for name in names:
            if spec.kind == "dlq":
                operation_id = "deadLetter" + _capitalised(_channel_id(sources[spec.name]))
            else:
                operation_id = f"send{name}"
            operations[operation_id] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "summary": f"{name} is sent to {spec.name}",
                "messages": [{"$ref": f"#/channels/{channel_id}/messages/{name}"}],
            }

    messages: Schema = {
        m.type_name(): _asyncapi_message(m, schema_ref[Envelope], schema_ref[m])
        for m in ALL_MESSAGES
    }
    messages["DeadLetter"] = _DEAD_LETTER
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Shop platform events",
            "version": "1.0.0",
            "description": (
                "Every Kafka topic of the shop platform and the messages on it. Each record value "
                "is a JSON envelope whose `payload` is the typed message. Generated by `python -m "
                "events.schema_tools asyncapi` from events/contracts.py and events/topics.py; "
                "do not edit by hand."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": shared["$defs"], "messages": messages},
    }


_TOPIC_DESCRIPTIONS = {
    "event": "Events, kept forever: the source of truth that read models are rebuilt from.",
    "command": "Commands to one service, kept for a week.",
    "compacted": "The latest state per key, compacted and kept forever.",
}

_DEAD_LETTER: Schema = {
    "name": "DeadLetter",
    "title": "Dead letter",
    "summary": "A record that could not be decoded, validated or handled, copied unchanged.",
    "contentType": "application/octet-stream",
    "headers": {
        "type": "object",
        "description": (
            "The original headers plus dlq.* headers saying why and from where (events/kit/dlq.py)."
        ),
        "additionalProperties": {"type": "string"},
    },
    "payload": {
        "type": "string",
        "format": "binary",
        "description": "The original record value, byte for byte; it may not be valid JSON.",
    },
}


def _asyncapi_message(model: type[Message], envelope_ref: str, payload_ref: str) -> Schema:
    name = model.type_name()
    key_field = "order_id" if "order_id" in model.model_fields else "sku"
    message: Schema = {
        "name": name,
        "title": name,
        **({"summary": model.__doc__.strip().splitlines()[0]} if model.__doc__ else {}),
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "description": _HEADERS_SCHEMA_NOTE,
            "properties": {
                "event_id": {"type": "string", "format": "uuid"},
                "event_type": {"type": "string", "const": name},
                "correlation_id": {"type": "string"},
            },
            "required": ["event_id", "event_type", "correlation_id"],
        },
        "payload": {
            "allOf": [
                {"$ref": envelope_ref},
                {
                    "type": "object",
                    "properties": {
                        "type": {"const": name},
                        "schema_version": {"maximum": model.schema_version},
                        "payload": {"$ref": payload_ref},
                    },
                },
            ]
        },
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": f"The message's {key_field}."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
        "x-kind": model.kind,
        "x-schema-version": model.schema_version,
        "x-schema-file": f"schemas/{schema_file_name(name, model.schema_version)}",
    }
    return message


def _channel_id(topic: str) -> str:
    """order.events.dlq -> orderEventsDlq"""
    first, *rest = re.split(r"[^A-Za-z0-9]+", topic)
    return first + "".join(_capitalised(part) for part in rest)


def _capitalised(word: str) -> str:
    return word[:1].upper() + word[1:]


def render_asyncapi(document: Schema | None = None) -> str:
    """JSON is YAML 1.2, so the document is written as JSON: no YAML library needed."""
    return json.dumps(document or asyncapi_document(), indent=2, ensure_ascii=False) + "\n"


def asyncapi_problems(document: Any) -> list[str]:
    """What is missing or dangling in an AsyncAPI document, checked against the contracts."""
    if not isinstance(document, dict) or document.get("asyncapi") != "3.0.0":
        return ["not an AsyncAPI 3.0.0 document"]
    problems = [f"dangling reference {ref}" for ref in _dangling_refs(document, document)]
    addresses = {c.get("address") for c in document.get("channels", {}).values()}
    problems += [
        f"topic {spec.name} has no channel"
        for spec in topics.all_topics()
        if spec.name not in addresses
    ]
    messages = document.get("components", {}).get("messages", {})
    schemas = document.get("components", {}).get("schemas", {})
    for model in ALL_MESSAGES:
        name = model.type_name()
        if name not in schemas:
            problems.append(f"{name}: payload schema missing from components.schemas")
        if "payload" not in messages.get(name, {}):
            problems.append(f"{name}: message or its payload missing from components.messages")
    return problems


def _dangling_refs(node: Any, document: Schema) -> list[str]:
    dangling: list[str] = []
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                _pointer(document, ref)
            except ValueError:
                dangling.append(ref)
        for value in node.values():
            dangling += _dangling_refs(value, document)
    elif isinstance(node, list):
        for value in node:
            dangling += _dangling_refs(value, document)
    return dangling


# --- command line --------------------------------------------------------------------------------


def check(directory: Path = SCHEMA_DIR, asyncapi_path: Path = ASYNCAPI_PATH) -> list[str]:
    problems = schema_problems(load_committed(directory), current_contracts())
    expected = render_asyncapi()
    if not asyncapi_path.exists():
        problems.append(f"{asyncapi_path.name} is missing; {ASYNCAPI_HINT}")
    elif asyncapi_path.read_text(encoding="utf-8") != expected:
        problems.append(f"{asyncapi_path.name} is stale; {ASYNCAPI_HINT}")
    problems += [f"{asyncapi_path.name}: {p}" for p in asyncapi_problems(json.loads(expected))]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m events.schema_tools", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write events/schemas/*.json and index.json")
    export.add_argument(
        "--allow-breaking",
        action="store_true",
        help="overwrite the baseline even if old data would no longer fit (only before any exists)",
    )
    commands.add_parser("asyncapi", help="write events/asyncapi.yaml")
    commands.add_parser("check", help="fail if schemas or asyncapi.yaml are stale or incompatible")
    args = parser.parse_args(argv)

    if args.command == "export":
        try:
            changed = export_schemas(allow_breaking=args.allow_breaking)
        except BreakingChange as exc:
            _report("refusing to export breaking changes (see --allow-breaking):", exc.problems)
            return 1
        except ValueError as exc:
            _report("cannot read the committed schemas:", [str(exc)])
            return 1
        print(f"events/schemas: {', '.join(changed) if changed else 'already up to date'}")
    elif args.command == "asyncapi":
        text = render_asyncapi()
        if problems := asyncapi_problems(json.loads(text)):
            _report("the generated AsyncAPI document is broken:", problems)
            return 1
        unchanged = ASYNCAPI_PATH.exists() and ASYNCAPI_PATH.read_text(encoding="utf-8") == text
        if not unchanged:
            ASYNCAPI_PATH.write_text(text, encoding="utf-8")
        print(f"{ASYNCAPI_PATH.name}: {'already up to date' if unchanged else 'written'}")
    else:
        try:
            problems = check()
        except ValueError as exc:
            problems = [str(exc)]
        if problems:
            _report("event contracts check failed:", problems)
            return 1
        print(f"event contracts: {len(current_contracts())} schemas and asyncapi.yaml up to date")
    return 0


def _report(headline: str, problems: list[str]) -> None:
    print(headline, file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
