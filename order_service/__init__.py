"""The thin ingress HTTP API for clients and the saga that drives each order."""
