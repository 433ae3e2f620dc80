"""The messaging kit: outbox, inbox consumer, dead letters, logs, health, metrics."""
