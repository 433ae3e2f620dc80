"""Run order_service: `python -m order_service`.

Settings come from environment variables prefixed ORDER_ (see settings.py), for example
ORDER_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 and ORDER_DATABASE_URL=postgresql://...
It serves /health/live, /health/ready and /metrics on ORDER_HTTP_PORT (default 8000).
"""

from __future__ import annotations

from events.kit.runtime import run_service
from order_service.app import build
from order_service.settings import Settings


def main() -> None:
    run_service(build(Settings()))


if __name__ == "__main__":
    main()
