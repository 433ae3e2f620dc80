"""The card-number scanner the end-of-session scan relies on: it finds what it must, and ignores
ids, timestamps and offsets."""

from __future__ import annotations

import uuid

import orjson
import pytest

from tests.security.cardscan import find_card_numbers, luhn_ok


@pytest.mark.parametrize(
    "text",
    [
        b"4111111111111111",
        b'{"payment_token":"4111111111111111"}',
        b"card=4111 1111 1111 1111;",
        b"card 4111-1111-1111-1111\n",
        b"tok_4111111111111111",
        b"card 4111111111111111.",  # a sentence's full stop is not a decimal point
        b"\x00\x01binary\x024111111111111111\xff",
        b"amex 378282246310005 and 3782 822463 10005",
        b"visa13 4222222222222",
        b"maestro19 6759649826438453003",
    ],
)
def test_finds_a_planted_card_number(text: bytes) -> None:
    hits = find_card_numbers(text)
    assert hits, text
    assert all(luhn_ok(h.digits) and 13 <= len(h.digits) <= 19 for h in hits)


def test_finds_each_of_several_card_numbers_and_where_they_start() -> None:
    data = b"a 4111111111111111 b 5555-5555-5555-4444 c"
    hits = find_card_numbers(data)
    assert [(h.digits, h.offset) for h in hits] == [
        ("4111111111111111", 2),
        ("5555555555554444", 21),
    ]
    assert hits[0].masked() == "411111******1111"


@pytest.mark.parametrize(
    "text",
    [
        b"4111111111111112",  # fails Luhn
        b"411111111111",  # 12 digits
        b"41111111111111111111",  # 20 digits
        b"1795644318442 1795644318442123",  # epoch milliseconds and microseconds
        b"a4111111111111111",  # inside a hex id
        b"4111111111111111f",
        b"4111 1111 1111 1111 1111 1111",  # groups that run on: not one number
        b"2026-11-25T22:10:12.544180Z offset=123456 partition=5",
        b"4111-1111 1111-1111",  # mixed separators
        b"(interval=1.0 runtime=3.969227025001601)",  # the fraction of a float
        b"4111111111111111.25",  # a decimal number
    ],
)
def test_ignores_what_is_not_a_card_number(text: bytes) -> None:
    assert find_card_numbers(text) == []


def test_ids_and_timestamps_of_a_real_envelope_are_not_card_numbers() -> None:
    records = [
        orjson.dumps(
            {
                "event_id": str(uuid.uuid4()),
                "hex": uuid.uuid4().hex,
                "occurred_at_ms": 1_700_000_000_000 + i * 7919,
                "offset": i,
            }
        )
        for i in range(20_000)
    ]
    assert find_card_numbers(b"\n".join(records)) == []


def test_all_digit_uuids_are_not_card_numbers() -> None:
    assert find_card_numbers(b"12345678-4111-1111-1111-411111111111") == []
