-- Products and their prices; every change also writes an outbox row in the same transaction.
CREATE TABLE products (
    sku           TEXT PRIMARY KEY CHECK (sku ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    name          TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description   TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 5000),
    category      TEXT NOT NULL CHECK (length(category) BETWEEN 1 AND 100),
    price_amount  BIGINT NOT NULL CHECK (price_amount >= 0),
    currency      TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    active        BOOLEAN NOT NULL DEFAULT true,
    updated_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX products_category ON products (category, sku);
