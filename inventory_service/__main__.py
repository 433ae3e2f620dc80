"""Run inventory_service: `python -m inventory_service`.

Settings come from environment variables prefixed INVENTORY_ (see settings.py), for example
INVENTORY_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 and INVENTORY_DATABASE_URL=postgresql://...
It serves GET /stock, GET /stock/{sku}, POST /admin/stock/{sku}/restock, /health/live,
/health/ready and /metrics on INVENTORY_HTTP_PORT (default 8003). Reservations expire after
INVENTORY_RESERVATION_TTL_S seconds (default 120), swept every INVENTORY_EXPIRY_SCAN_MS.
"""

from __future__ import annotations

from events.kit.runtime import run_service
from inventory_service.app import build
from inventory_service.settings import Settings


def main() -> None:
    run_service(build(Settings()))


if __name__ == "__main__":
    main()
