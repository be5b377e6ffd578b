-- Deployment history: deployments, their events, and the audit log.
--
-- One file for SQLite and PostgreSQL, applied through sqlx's `Any` driver, so
-- it sticks to what both understand and what `Any` can decode: TEXT and
-- BIGINT only (times are epoch milliseconds, ids and JSON are TEXT, no
-- BOOLEAN, no SERIAL/AUTOINCREMENT: every id is made by the store).
-- Ids are compared as text: they are `d-`/`a-` followed by lowercase
-- Crockford base32, whose order is the same under the C collation and the
-- usual locale collations.

CREATE TABLE deployments (
    id TEXT PRIMARY KEY NOT NULL,
    service TEXT NOT NULL,
    environment TEXT NOT NULL,
    version TEXT NOT NULL,
    commit_sha TEXT,
    strategy TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN
        ('pending', 'in_progress', 'paused', 'succeeded', 'failed', 'aborted', 'rolled_back')),
    reason TEXT,
    deployed_by TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    rollback_of TEXT REFERENCES deployments (id),
    spec_digest TEXT NOT NULL,
    -- The seq of this deployment's newest event. Bumping it is the first write
    -- of every transaction that adds an event, which also locks the row on
    -- PostgreSQL, so concurrent writers get distinct, gap-free seqs.
    last_event_seq BIGINT NOT NULL
);

-- At most one live deployment per service and environment (invariant 8).
CREATE UNIQUE INDEX deployments_one_live ON deployments (service, environment)
    WHERE status IN ('pending', 'in_progress', 'paused');

CREATE INDEX deployments_by_target ON deployments (service, environment, started_at);
CREATE INDEX deployments_by_start ON deployments (started_at);
CREATE INDEX deployments_succeeded ON deployments (service, environment, finished_at)
    WHERE status = 'succeeded';

CREATE TABLE deployment_events (
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT,
    PRIMARY KEY (deployment_id, seq)
);

CREATE TABLE audit (
    id TEXT PRIMARY KEY NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'denied', 'error')),
    detail TEXT
);

CREATE INDEX audit_by_time ON audit (at);
