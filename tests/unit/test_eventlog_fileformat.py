"""The export file keeps every byte of keys, headers and values, gzipped or not."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from deploy.eventlog import fileformat
from deploy.eventlog.fileformat import TopicLayout
from deploy.eventlog.records import EventLogError, LogRecord

AWKWARD = [
    LogRecord("t", 0, 0, 1_700_000_000_000, b"order-1", b'{"a":1,"b":[true,null]}', (("h", b"v"),)),
    LogRecord("t", 0, 1, 1_700_000_000_001, None, None, ()),
    LogRecord(
        "t", 1, 7, 1_700_000_000_002, b"\xff\xfe", b"\x00\x01not json", (("bin", b"\xc3\x28"),)
    ),
    LogRecord(
        "t", 2, 9, 1_700_000_000_003, b"", b'{ "spaced" : 1 }', (("dup", b"1"), ("dup", b"2"))
    ),
    LogRecord("u.dlq", 0, 3, 1_700_000_000_004, "ключ".encode(), b'"just a string"', ()),
]


def test_every_record_survives_a_line_round_trip_byte_for_byte() -> None:
    for record in AWKWARD:
        line = orjson.loads(fileformat.encode_lines([record]))
        assert fileformat.record_from_dict(line) == record


def test_envelope_values_are_written_as_readable_json_and_odd_bytes_as_base64() -> None:
    lines = [orjson.loads(x) for x in fileformat.encode_lines(AWKWARD).splitlines()]
    assert lines[0]["value"] == {"a": 1, "b": [True, None]}
    assert "value_b64" in lines[2]
    assert "key_b64" in lines[2]
    assert lines[2]["headers"][0][2] == "b64"
    assert "value_b64" in lines[3]  # re-serialising would drop the spaces


@pytest.mark.parametrize("name", ["log.jsonl", "log.jsonl.gz"])
def test_a_file_round_trip_keeps_layouts_and_record_order(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    layouts = {"t": TopicLayout(3, {"cleanup.policy": "delete"}), "u.dlq": TopicLayout(1)}
    with fileformat.open_for_writing(path) as f:
        f.write(fileformat.header_line(layouts))
        f.write(fileformat.encode_lines(AWKWARD))
    export = fileformat.read_export(path)
    assert export.layouts == layouts
    assert export.all_records() == AWKWARD
    assert fileformat.count_records(path) == len(AWKWARD)


def test_a_file_that_is_not_an_export_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "other.jsonl"
    path.write_bytes(b'{"hello": 1}\n')
    with pytest.raises(EventLogError, match="not an event-log export"):
        fileformat.read_export(path)
    with pytest.raises(EventLogError, match="no such file"):
        fileformat.read_export(tmp_path / "missing.jsonl")
