-- Stock per SKU and one reservation per order. The CHECKs are the no-oversell invariant in the
-- database itself: whatever a handler gets wrong, stock never goes negative.
CREATE TABLE stock (
    sku                  TEXT PRIMARY KEY,
    on_hand              INTEGER NOT NULL,
    reserved             INTEGER NOT NULL DEFAULT 0,
    low_stock_threshold  INTEGER NOT NULL DEFAULT 10,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT stock_on_hand_not_negative CHECK (on_hand >= 0),
    CONSTRAINT stock_reserved_not_negative CHECK (reserved >= 0),
    CONSTRAINT stock_reserved_within_on_hand CHECK (reserved <= on_hand),
    CONSTRAINT stock_threshold_not_negative CHECK (low_stock_threshold >= 0)
);

CREATE TABLE reservations (
    order_id    UUID PRIMARY KEY,
    status      TEXT NOT NULL,
    lines       JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT reservations_status CHECK (
        status IN ('RESERVED', 'COMMITTED', 'RELEASED', 'EXPIRED', 'RESTOCKED')
    )
);
-- The expiry scan reads only live reservations.
CREATE INDEX reservations_live_expiry ON reservations (expires_at) WHERE status = 'RESERVED';
