"""Find payment card numbers in bytes: 13 to 19 digits that pass the Luhn check, written in one run
(`4111111111111111`) or in groups split by single spaces or dashes (`4111 1111 1111 1111`,
`3782-822463-10005`).

What does not count, and why (each exclusion is as narrow as the false positives it removes):
- A run touching a letter or another digit is part of something longer (a hex id, a longer
  number), not a card number on its own. So hex event ids and dashed UUIDs never match, and a
  digit run inside `tok_4111...` still does (`_` is not a letter). Likewise the digits of a
  decimal number (the fraction of `runtime=3.969227025001601` in a faust log line).
- A number starting with 0 or 1. No card network issues numbers starting with 0, and 1 belongs to
  UATP airline cards only, which this platform never handles; epoch timestamps in seconds,
  milliseconds, microseconds and nanoseconds all start with 1 until 2033 and are everywhere in
  logs and records (a 13-digit millisecond timestamp passes Luhn one time in ten).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Not touching a letter or digit, and not either side of a decimal point between digits.
_EDGE_BEFORE = rb"(?<![0-9A-Za-z])(?<![0-9]\.)"
_EDGE_AFTER = rb"(?![0-9A-Za-z])(?!\.[0-9])"
CONTIGUOUS = re.compile(_EDGE_BEFORE + rb"[0-9]{13,19}" + _EDGE_AFTER)
# 4-4-4-4(-3), 4-6-5 (Amex), 4-6-4 (Diners) and the like: the separator is the same throughout.
GROUPED = re.compile(
    _EDGE_BEFORE + rb"[0-9]{4}(?P<sep>[ -])[0-9]{4,6}(?:(?P=sep)[0-9]{3,5}){1,3}" + _EDGE_AFTER
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def looks_like_card(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and digits[0] not in "01" and luhn_ok(digits)


@dataclass(frozen=True)
class Hit:
    digits: str
    offset: int

    def masked(self) -> str:
        """Enough to find it again, not enough to use it."""
        return f"{self.digits[:6]}{'*' * (len(self.digits) - 10)}{self.digits[-4:]}"


def find_card_numbers(data: bytes) -> list[Hit]:
    """Every card-number-like run in data, as digits, with where it starts."""
    hits: dict[int, Hit] = {}
    for pattern in (CONTIGUOUS, GROUPED):
        for m in pattern.finditer(data):
            digits = re.sub(rb"[ -]", b"", m.group()).decode()
            if looks_like_card(digits):
                hits.setdefault(m.start(), Hit(digits, m.start()))
    return sorted(hits.values(), key=lambda h: h.offset)
