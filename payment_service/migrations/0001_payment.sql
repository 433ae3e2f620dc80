-- One payment per order, as it stands now; the ledger keeps every movement that led there.
CREATE TABLE payments (
    order_id           UUID PRIMARY KEY,
    payment_id         UUID NOT NULL UNIQUE,
    status             TEXT NOT NULL
                       CHECK (status IN ('AUTHORIZED', 'DECLINED', 'CAPTURED', 'VOIDED', 'REFUNDED')),
    amount             BIGINT NOT NULL CHECK (amount >= 0),
    currency           CHAR(3) NOT NULL,
    -- tokens only, and only their last characters: nothing here can look like a card number
    token_hint         TEXT NOT NULL CHECK (token_hint !~ '[0-9]{7,}'),
    gateway_reference  TEXT,
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE ledger (
    id                 BIGSERIAL PRIMARY KEY,
    order_id           UUID NOT NULL,
    payment_id         UUID NOT NULL,
    kind               TEXT NOT NULL
                       CHECK (kind IN ('authorize', 'capture', 'void', 'refund', 'decline')),
    amount             BIGINT NOT NULL CHECK (amount >= 0),
    currency           CHAR(3) NOT NULL,
    -- a saga step's key: the gateway is called at most once per key, and it is recorded once
    idempotency_key    TEXT NOT NULL UNIQUE,
    gateway_reference  TEXT,
    code               TEXT,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX ledger_by_order ON ledger (order_id, id);
