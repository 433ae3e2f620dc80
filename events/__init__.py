"""Shared event contracts, topic declarations and the messaging kit.

Nothing service-specific lives here: only what every service needs to talk over Kafka.
"""
