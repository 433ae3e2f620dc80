-- Orders still holding (or asking for) stock, per customer: the cap on live reservations counts them.
CREATE INDEX orders_customer_open ON orders (customer_id)
    WHERE status IN ('PENDING', 'STOCK_RESERVED');

-- Idempotency keys are kept for ORDER_IDEMPOTENCY_TTL_H, then purged oldest first.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
