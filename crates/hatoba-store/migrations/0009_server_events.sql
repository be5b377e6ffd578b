-- Events of the server itself, tied to no deployment: a spec reload with
-- no deployment in progress changes what the next deployment does, and a
-- subscriber of the event stream must see it.
--
-- They take their `event_id` from the same counter row as the deployments'
-- events (`event_counter`, 0006), bumped as the first write of their
-- transaction, so the two tables together are one stream in commit order:
-- `Store::events_after` reads both, merged by id, and a reader resuming
-- after an id gets every later event of either kind once.
--
-- `environment`: the environment the event concerns, NULL for every
-- environment the server runs.
--
-- The rules of 0001 hold: TEXT and BIGINT only, the same file for SQLite
-- and PostgreSQL. Nothing older changes: the table starts empty.
CREATE TABLE server_events (
    event_id BIGINT PRIMARY KEY NOT NULL,
    at BIGINT NOT NULL,
    environment TEXT,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT
);
