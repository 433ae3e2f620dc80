"""What the bench's `vs_monolith` can say: a ratio of limits only when both sides saturated."""

from __future__ import annotations

from typing import Any

import pytest

from bench.__main__ import ratio_basis, saturated


def step(offered: float, confirmed: float, p99_ms: float | None = 50.0) -> dict[str, Any]:
    s = {"offered_per_s": offered, "confirmed_per_s": confirmed, "latency_ms": {"p99": p99_ms}}
    s["saturated"] = saturated(s)
    return s


@pytest.mark.parametrize(
    ("offered", "confirmed", "p99_ms", "expected"),
    [
        (250, 249.4, 501.0, False),  # kept up
        (900, 898.0, 712.0, False),  # at its knee, still keeping up
        (700, 595.0, 900.0, False),  # 85 % of the rate: not yet
        (700, 594.9, 900.0, True),  # under 85 % of the rate
        (500, 497.0, 5001.0, True),  # every order confirmed, but falling behind
        (50, 50.0, None, False),  # a step with no latency figure (nothing ended)
    ],
)
def test_a_step_saturated_when_it_confirmed_too_little_or_fell_behind(
    offered: float, confirmed: float, p99_ms: float | None, expected: bool
) -> None:
    assert step(offered, confirmed, p99_ms)["saturated"] is expected


def test_the_ratio_compares_limits_only_when_both_sides_saturated() -> None:
    platform_kept_up = [step(50, 50.0), step(250, 249.4, 501.0)]
    platform_limit = [step(400, 397.1), step(700, 456.2, 20_000.0)]
    monolith_kept_up = [step(600, 598.7), step(900, 898.0, 712.0)]
    monolith_limit = [step(900, 877.4, 900.0), step(1800, 870.0, 9_000.0)]

    assert ratio_basis(platform_limit, monolith_limit) == "both at their limits"
    assert ratio_basis(platform_kept_up, monolith_limit).startswith("a floor")
    assert ratio_basis(platform_limit, monolith_kept_up).startswith("a ceiling")
    assert ratio_basis(platform_kept_up, monolith_kept_up).startswith("neither")
    assert ratio_basis([], []).startswith("neither")
