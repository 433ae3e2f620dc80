-- The outbox holds only what is still to be published: the relay deletes each row once Kafka has
-- acknowledged it (it used to mark it published and purge it an hour later). Kafka keeps the
-- events; consumers dedupe by event id in their inbox, so the outbox needs only its order (id):
-- no index on event_id (a random UUID, an index page of its own per insert) and none on the mark.
DELETE FROM outbox WHERE published_at IS NOT NULL;
DROP INDEX IF EXISTS outbox_pending;
DROP INDEX IF EXISTS outbox_published_at;
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_event_id_key;
ALTER TABLE outbox DROP COLUMN published_at;
