-- Analysis measurements: every measurement a deployment's analysis runs
-- took (metric, value, verdict, time), in order, for `hatoba analysis` and
-- for explaining why a deployment was promoted or aborted.
--
-- The rules of 0001 hold: TEXT and BIGINT only, so the same file works on
-- SQLite and PostgreSQL through sqlx's `Any` driver. `value` is the
-- measured number as decimal text, written in the shortest form that reads
-- back to the same double (full precision, no REAL/DOUBLE column whose
-- rounding and decoding differ between the two), NULL when there is none.

-- The seq of the deployment's newest measurement. Bumping it is the first
-- write of the transaction that adds a measurement, which also locks the
-- deployment's row on PostgreSQL, so concurrent writers get distinct,
-- gap-free seqs (the same scheme as `last_event_seq`).
ALTER TABLE deployments ADD COLUMN last_measurement_seq BIGINT NOT NULL DEFAULT 0;

CREATE TABLE measurements (
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    -- Which analysis run took it: `background`, `step 2`, ...
    run TEXT NOT NULL,
    metric TEXT NOT NULL,
    value TEXT,
    verdict TEXT NOT NULL CHECK (verdict IN
        ('passed', 'failed', 'inconclusive', 'error', 'insufficient')),
    detail TEXT,
    PRIMARY KEY (deployment_id, seq)
);
