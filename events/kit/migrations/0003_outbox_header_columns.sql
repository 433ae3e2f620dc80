-- The two Kafka headers a record carries beside its event id (its type and correlation id) as
-- columns of their own, not a JSON array of [name, value] pairs: about 150 bytes less per row
-- in the table and the WAL, no JSON for PostgreSQL to parse on insert and print on the relay's
-- read, nor for the services to write and read back. Rows still pending take them from their
-- envelope (the value), which has both.
ALTER TABLE outbox ADD COLUMN event_type TEXT, ADD COLUMN correlation_id TEXT;
UPDATE outbox SET
    event_type = convert_from(value, 'UTF8')::jsonb ->> 'type',
    correlation_id = convert_from(value, 'UTF8')::jsonb ->> 'correlation_id';
ALTER TABLE outbox
    ALTER COLUMN event_type SET NOT NULL,
    ALTER COLUMN correlation_id SET NOT NULL,
    DROP COLUMN headers;
