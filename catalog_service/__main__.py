"""Run catalog_service: `python -m catalog_service`.

Settings come from environment variables prefixed CATALOG_ (see settings.py), for example
CATALOG_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 and CATALOG_DATABASE_URL=postgresql://...
It serves /health/live, /health/ready and /metrics on CATALOG_HTTP_PORT (default 8001).
"""

from __future__ import annotations

from catalog_service.app import build
from catalog_service.settings import Settings
from events.kit.runtime import run_service


def main() -> None:
    run_service(build(Settings()))


if __name__ == "__main__":
    main()
