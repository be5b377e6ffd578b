-- The variables a deployment ran with (the environment's and `--set`), as
-- a JSON object of strings, so that a rollback to it runs it the same way.
--
-- The rules of 0001 hold: TEXT only, the same file for SQLite and
-- PostgreSQL. Deployments recorded before this column have none ('{}').
ALTER TABLE deployments ADD COLUMN vars TEXT NOT NULL DEFAULT '{}';
