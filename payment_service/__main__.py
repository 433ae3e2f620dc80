"""Run payment_service: `python -m payment_service`.

Settings come from environment variables prefixed PAYMENT_ (see settings.py), for example
PAYMENT_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 and PAYMENT_DATABASE_URL=postgresql://...
It serves /health/live, /health/ready, /metrics and GET /payments/{order_id} on PAYMENT_HTTP_PORT
(default 8004). The simulated gateway is tuned with PAYMENT_GATEWAY_LATENCY_MS,
PAYMENT_GATEWAY_FAILURE_RATE, PAYMENT_GATEWAY_TIMEOUT_MS and PAYMENT_GATEWAY_SEED.
"""

from __future__ import annotations

from events.kit.runtime import run_service
from payment_service.app import build
from payment_service.settings import Settings


def main() -> None:
    run_service(build(Settings()))


if __name__ == "__main__":
    main()
