"""Payments through a gateway interface: authorize, capture, void, refund."""
