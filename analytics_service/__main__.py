"""Run analytics_service: `python -m analytics_service`.

Settings come from environment variables prefixed ANALYTICS_ (see settings.py), for example
ANALYTICS_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 and ANALYTICS_DATABASE_URL=postgresql://...
It serves the dashboard at /, the JSON API under /api, /health/live, /health/ready and /metrics
on ANALYTICS_HTTP_PORT (default 8002). Faust keeps its local data under ANALYTICS_DATA_DIR
(default .var/analytics); see analytics_service/README.md for the design.
"""

from __future__ import annotations

from analytics_service.app import build
from analytics_service.settings import Settings
from events.kit.runtime import run_service


def main() -> None:
    run_service(build(Settings()))


if __name__ == "__main__":
    main()
