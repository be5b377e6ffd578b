-- The exact artifact a deployment ran: for a Docker service, the image id
-- (`sha256:...`) its `name:VERSION` tag named when the deployment was
-- recorded. A rollback or a re-deployment of the version starts containers
-- from this id, never from what the tag names by then. NULL: a process
-- service, or recorded before this column.
--
-- The rules of 0001 hold: TEXT and BIGINT only, the same file for SQLite
-- and PostgreSQL.
ALTER TABLE deployments ADD COLUMN image_id TEXT;
