"""bench.notify against the session's real server: the NOTIFY variant notifies, the other not."""

from __future__ import annotations

import argparse

import pytest

from bench.notify import CHANNEL, Variant, run_round
from bench.notify import main as notify_main
from tests.stack import Stack

pytestmark = pytest.mark.integration


async def test_only_the_notify_variant_reaches_the_listeners(stack: Stack) -> None:
    url = stack.database_url("postgres")
    # a short run of the bench makes its databases and tables, and reports
    await notify_main(argparse.Namespace(database_url=url, rounds=1, seconds=0.2, writers=1))
    notifying, quiet = Variant("NOTIFY", CHANNEL), Variant("no NOTIFY", "")
    await run_round(notifying, url, writers=1, seconds=0.3)
    await run_round(quiet, url, writers=1, seconds=0.3)
    for v in (notifying, quiet):
        assert v.commits_per_s[0] > 0
        assert v.p50_ms[0] <= v.p99_ms[0]
        assert v.server_ms[0] > 0  # the server's processes were found and did the work
    assert quiet.heard == 0
    assert notifying.heard > 0
