-- When a deployment began to serve all traffic (its new version at 100 %),
-- in epoch milliseconds. A deployment serves before it is complete: the
-- previous version may stay warm (a blue-green scale-down delay, a canary's
-- watch) until `finished_at`, which stays the completion time. NULL: it
-- never served all traffic (still rolling out, rolled back before, or
-- recorded before this column).
--
-- The rules of 0001 hold: TEXT and BIGINT only, the same file for SQLite
-- and PostgreSQL.
ALTER TABLE deployments ADD COLUMN serving_at BIGINT;
