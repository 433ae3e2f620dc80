"""A long-running service's garbage collector: startup's objects frozen, a larger young generation.

A service imports pydantic models, FastAPI, aiokafka and faust, and builds its validators and app
at startup: about 100k objects that live as long as the process. CPython's full collection
(generation 2) walks every one of them each time, 45 ms at rest and over 100 ms under load: a pause
of every request and message in flight (figures below). `gc.freeze()` moves what exists once the
service has started into a generation no collection walks again (CPython's documented use is for
pre-fork servers; the effect on a steady service is the same).

Under load the young generation (700 allocations by default) is collected hundreds of times a
second, and each collection promotes whatever is in flight at that moment (a batch being applied, a
request being answered) to the older generations, where it costs the next full collections. A
larger threshold collects less often and promotes less of what is about to die anyway.

Measured (docs/performance.md, session 19): in bench runs at 50, 150 and 250 orders/s, the order
service spent 3.1 s in collections with CPython's defaults (19 full ones, the longest 109 ms), 1.7
s with startup frozen, and 0.4 s with a young generation of 7,000 as well, with no full collection
after startup at all; analytics 3.2, 1.6 and 0.5 s. `SHOP_GC_FREEZE=0` and `SHOP_GC_YOUNG=<n>`
override both, to measure them again.
"""

from __future__ import annotations

import gc
import os

# Objects allocated (net) before a young collection; CPython's default is 700.
YOUNG_THRESHOLD = 7_000


def settle(*, collect: bool = True) -> None:
    """Once the process has started: collect (a command line tool need not), freeze what is
    left, set the thresholds."""
    young = int(os.environ.get("SHOP_GC_YOUNG", YOUNG_THRESHOLD))
    if collect:
        gc.collect()
    if os.environ.get("SHOP_GC_FREEZE", "1") == "1":
        gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young, older, oldest)
