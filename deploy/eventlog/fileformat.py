"""The export file: JSON lines, optionally gzipped, one header line then one line per record.

    {"shop_eventlog": 1, "topics": {"order.events": {"partitions": 6, "config": {...}}}}
    {"topic": "order.events", "partition": 3, "offset": 17, "timestamp": 1764000000000,
     "key": "<utf-8>", "headers": [["event_id", "<utf-8>"], ["blob", "<base64>", "b64"]],
     "value": {...envelope...}}

Bytes are kept exactly: a value is written as JSON only when orjson writes it back byte for byte
(every envelope does), otherwise as `value_b64`; keys and header values that are not UTF-8 are
written in base64 with a marker. A round trip therefore preserves keys, headers and payloads.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from deploy.eventlog.records import EventLogError, LogRecord

FORMAT_VERSION = 1
FORMAT_KEY = "shop_eventlog"


@dataclass(frozen=True)
class TopicLayout:
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def _text(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode(), False
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode(), True


def record_to_dict(record: LogRecord) -> dict[str, Any]:
    line: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
    }
    if record.key is None:
        line["key"] = None
    else:
        key, b64 = _text(record.key)
        line["key_b64" if b64 else "key"] = key
    headers: list[list[str]] = []
    for name, raw in record.headers:
        text, b64 = _text(raw)
        headers.append([name, text, "b64"] if b64 else [name, text])
    line["headers"] = headers
    value = record.value
    if value is None:
        line["value"] = None
    else:
        try:
            parsed = orjson.loads(value)
            exact = orjson.dumps(parsed) == value
        except orjson.JSONDecodeError:
            exact = False
        if exact:
            line["value"] = orjson.Fragment(value)  # already exact JSON: copied, not re-encoded
        else:
            line["value_b64"] = base64.b64encode(value).decode()
    return line


def record_from_dict(line: dict[str, Any]) -> LogRecord:
    try:
        if "key_b64" in line:
            key: bytes | None = base64.b64decode(line["key_b64"])
        else:
            key = None if line["key"] is None else str(line["key"]).encode()
        if "value_b64" in line:
            value: bytes | None = base64.b64decode(line["value_b64"])
        else:
            value = None if line["value"] is None else orjson.dumps(line["value"])
        headers = tuple(
            (h[0], base64.b64decode(h[1]) if len(h) > 2 else str(h[1]).encode())
            for h in line["headers"]
        )
        return LogRecord(
            str(line["topic"]),
            int(line["partition"]),
            int(line["offset"]),
            int(line["timestamp"]),
            key,
            value,
            headers,
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise EventLogError(f"not an event-log record: {exc!r}") from None


def header_line(layouts: dict[str, TopicLayout]) -> bytes:
    topics = {n: {"partitions": t.partitions, "config": t.config} for n, t in layouts.items()}
    return orjson.dumps({FORMAT_KEY: FORMAT_VERSION, "topics": topics}) + b"\n"


def encode_lines(records: Iterable[LogRecord]) -> bytes:
    """Many records as one chunk of lines: one write call per batch keeps export fast."""
    return b"".join(orjson.dumps(record_to_dict(r)) + b"\n" for r in records)


def open_for_writing(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.GzipFile(path, "wb", compresslevel=3)  # type: ignore[return-value]
    return path.open("wb")


def _open_for_reading(path: Path) -> IO[bytes]:
    if not path.exists():
        raise EventLogError(f"no such file: {path}")
    if path.suffix == ".gz":
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


@dataclass
class ExportFile:
    layouts: dict[str, TopicLayout]
    path: Path

    def records(self, batch: int = 5000) -> Iterator[list[LogRecord]]:
        with _open_for_reading(self.path) as f:
            f.readline()
            chunk: list[LogRecord] = []
            for n, raw in enumerate(f, start=2):
                if not raw.strip():
                    continue
                try:
                    chunk.append(record_from_dict(orjson.loads(raw)))
                except orjson.JSONDecodeError as exc:
                    raise EventLogError(f"{self.path}:{n}: not JSON ({exc})") from None
                if len(chunk) >= batch:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

    def all_records(self) -> list[LogRecord]:
        return [r for chunk in self.records() for r in chunk]


def read_export(path: Path) -> ExportFile:
    """Open an export file and read its header line."""
    try:
        with _open_for_reading(path) as f:
            first = orjson.loads(f.readline() or b"{}")
    except (OSError, orjson.JSONDecodeError) as exc:
        raise EventLogError(f"{path} is not an event-log export: {exc}") from None
    if not isinstance(first, dict) or first.get(FORMAT_KEY) != FORMAT_VERSION:
        raise EventLogError(f"{path} is not an event-log export (no {FORMAT_KEY} header line)")
    layouts = {
        name: TopicLayout(int(t["partitions"]), {str(k): str(v) for k, v in t["config"].items()})
        for name, t in first["topics"].items()
    }
    return ExportFile(layouts, path)


def count_records(path: Path) -> int:
    """Lines after the header, counted without parsing them (for progress bars)."""
    with _open_for_reading(path) as f:
        return max(0, sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) - 1)
