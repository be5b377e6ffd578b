-- Secrets: values encrypted by the server (AEAD, a fresh nonce per value,
-- environment + name + version bound as associated data), one row per
-- version. The store keeps ciphertext only; the key is outside the
-- database (STATE/secret.key or HATOBA_SECRET_KEY), so a copy of the
-- database alone reveals no value. `key_id` names the key a value was
-- sealed with (a digest of it, not the key), so a wrong key is reported as
-- such rather than as tampering.
--
-- A deployment records the versions of the secrets it ran with (a JSON
-- object of name -> version), never a value, so a rollback runs with the
-- values it ran with.
--
-- The rules of 0001 hold: TEXT and BIGINT only, the same file for SQLite
-- and PostgreSQL.
CREATE TABLE secrets (
    environment TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (environment, name, version)
);

ALTER TABLE deployments ADD COLUMN secrets TEXT NOT NULL DEFAULT '{}';
