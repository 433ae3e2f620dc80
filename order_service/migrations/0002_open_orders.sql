-- Orders still holding (or asking for) stock, per customer: the cap on live reservations counts them.
CREATE INDEX orders_customer_open ON orders (customer_id)
    WHERE status IN ('PENDING', 'STOCK_RESERVED');
