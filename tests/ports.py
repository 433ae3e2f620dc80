"""Free ports for the servers tests start, chosen below Linux's ephemeral range (32768-60999).

A port the kernel hands out for `bind(0)` lies in that range, and between the moment it is
chosen and the moment the server binds it, any outgoing connection on the machine may take it as
its local port (a chaos run failed so: a service could not bind its port). Outgoing connections
never use ports below the range, so a port chosen there stays free unless another test picks it;
each choice is random and never repeated in one process.
"""

from __future__ import annotations

import random
import socket

EPHEMERAL_START = 32768
# Clear of every fixed port of the test stacks (19xxx), the long chaos run's (20120) and the
# bench's default (27100 and up).
FREE_RANGE = (28000, 32700)

_handed: set[int] = set()
_random = random.SystemRandom()


def free_port() -> int:
    """A port of FREE_RANGE that nothing listens on now and this process has not handed out."""
    low, high = FREE_RANGE
    for _ in range(2000):
        port = _random.randrange(low, high)
        if port in _handed:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed.add(port)
        return port
    raise RuntimeError(f"no free port between {low} and {high}")
