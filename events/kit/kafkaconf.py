"""How every Kafka client of the platform authenticates: one function from settings to the keyword
arguments of AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient (and faust's credentials).

PLAINTEXT gives no options at all, so a client built with them is exactly what it was before.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Protocol

from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr


class KafkaSecurity(Protocol):
    """The settings fields client_options reads (ServiceSettings has them all)."""

    @property
    def kafka_security_protocol(self) -> str: ...
    @property
    def kafka_sasl_mechanism(self) -> str: ...
    @property
    def kafka_username(self) -> str: ...
    @property
    def kafka_password(self) -> SecretStr: ...
    @property
    def kafka_ssl_cafile(self) -> Path | None: ...


class KafkaSecurityError(ValueError):
    """The settings ask for SASL without a user, or for SSL without a way to trust the broker."""


def client_options(settings: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client: security protocol, SASL user, TLS context."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        if not settings.kafka_username:
            raise KafkaSecurityError(f"{protocol} needs kafka_username and kafka_password")
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_username,
            "sasl_plain_password": settings.kafka_password.get_secret_value(),
        }
    if protocol.endswith("SSL"):
        options["ssl_context"] = tls_context(settings.kafka_ssl_cafile)
    return options


def tls_context(cafile: Path | None) -> ssl.SSLContext:
    """Verify the broker's certificate and host name against cafile (or the system's CAs)."""
    context: ssl.SSLContext = create_ssl_context(cafile=str(cafile) if cafile else None)
    return context


def faust_credentials(settings: KafkaSecurity) -> Any:
    """The same security as faust's broker_credentials (None for PLAINTEXT)."""
    import faust

    options = client_options(settings)
    protocol = options.get("security_protocol")
    if protocol is None:
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return faust.SASLCredentials(
        username=options["sasl_plain_username"],
        password=options["sasl_plain_password"],
        ssl_context=options.get("ssl_context"),
        mechanism=options["sasl_mechanism"],
    )


def redacted(options: dict[str, Any]) -> dict[str, Any]:
    """Options fit for a log line: the password replaced."""
    return {k: ("**********" if "password" in k else v) for k, v in options.items()}
