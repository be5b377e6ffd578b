-- A global id for every event, made by the store, for streaming: a reader
-- resumes after the last id it has seen (`Store::events_after`).
--
-- The rules of 0001 hold: TEXT and BIGINT only, the same file for SQLite
-- and PostgreSQL. Ids come from the one row of `event_counter`, bumped as
-- the first write of every transaction that adds an event (as
-- `last_event_seq` is per deployment). On PostgreSQL that row's lock
-- queues the writers until each commits, so ids are taken in commit order:
-- a reader that has seen id N never later finds a smaller id committed
-- after it, and a transaction rolled back gives its id back (no gaps).
--
-- Events recorded before this migration are numbered in the order they
-- happened (time, then deployment, then seq).
ALTER TABLE deployment_events ADD COLUMN event_id BIGINT;

UPDATE deployment_events SET event_id = numbered.n
FROM (
    SELECT deployment_id, seq, ROW_NUMBER() OVER (ORDER BY at, deployment_id, seq) AS n
    FROM deployment_events
) AS numbered
WHERE deployment_events.deployment_id = numbered.deployment_id
  AND deployment_events.seq = numbered.seq;

CREATE UNIQUE INDEX deployment_events_by_id ON deployment_events (event_id);

CREATE TABLE event_counter (
    name TEXT PRIMARY KEY NOT NULL,
    last_event_id BIGINT NOT NULL
);

INSERT INTO event_counter (name, last_event_id)
SELECT 'events', COALESCE(MAX(event_id), 0) FROM deployment_events;
