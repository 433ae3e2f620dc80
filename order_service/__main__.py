"""Run order_service: `python -m order_service`.

Settings come from environment variables prefixed ORDER_ (see settings.py), for example
ORDER_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 and ORDER_DATABASE_URL=postgresql://...
It serves /health/live, /health/ready and /metrics on ORDER_HTTP_PORT (default 8000).
"""

from __future__ import annotations

import asyncio

from order_service.app import build
from order_service.settings import Settings


def main() -> None:
    asyncio.run(build(Settings()).serve())


if __name__ == "__main__":
    main()
