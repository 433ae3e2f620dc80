"""New identifiers: time-ordered UUIDs (version 7, RFC 9562) for events and orders.

A version 7 UUID starts with its creation time in milliseconds (and, from uuid_utils, a counter
that keeps one process's ids increasing within a millisecond), then random bits. Every index on
such ids (the inbox's, the orders', reservations' and payments' keys) is then written at its
right-hand end, as a sequence would be, instead of on a random page of the whole index: fewer
pages to keep in memory, fewer page splits, fewer full-page images in the WAL after a
checkpoint. Random version 4 ids spread every insert over every page. The time an id gives away
is in the envelope's `occurred_at` and the order's `created_at` anyway.
"""

from __future__ import annotations

import uuid

from uuid_utils.compat import uuid7


def new_id() -> uuid.UUID:
    """A fresh identifier (a standard `uuid.UUID`, version 7)."""
    return uuid7()
