CREATE TABLE catalog_view (
    sku           TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    category      TEXT NOT NULL,
    price_amount  BIGINT NOT NULL CHECK (price_amount >= 0),
    currency      TEXT NOT NULL,
    active        BOOLEAN NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE orders (
    order_id          UUID PRIMARY KEY,
    customer_id       TEXT NOT NULL,
    status            TEXT NOT NULL,
    lines             JSONB NOT NULL,
    total_amount      BIGINT NOT NULL,
    currency          TEXT NOT NULL,
    payment_token     TEXT NOT NULL,
    stock_committed   BOOLEAN NOT NULL DEFAULT false,
    payment_captured  BOOLEAN NOT NULL DEFAULT false,
    refunded          BOOLEAN NOT NULL DEFAULT false,
    reason            TEXT,
    deadline          TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer ON orders (customer_id, created_at DESC);
CREATE INDEX orders_deadline ON orders (deadline) WHERE deadline IS NOT NULL;

CREATE TABLE order_timeline (
    id        BIGSERIAL PRIMARY KEY,
    order_id  UUID NOT NULL REFERENCES orders (order_id),
    status    TEXT NOT NULL,
    note      TEXT,
    at        TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX order_timeline_order ON order_timeline (order_id, id);

CREATE TABLE idempotency_keys (
    customer_id   TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status_code   INTEGER NOT NULL,
    response      JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, key)
);
