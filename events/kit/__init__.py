"""The messaging kit: transactional outbox, inbox consumer, dead letters, logs, health and metrics."""
