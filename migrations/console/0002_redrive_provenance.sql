-- What each redrive sent: the provenance of the letter when it was redriven (`genuine`:
-- the source topic's own record was republished; `forged` or `unverifiable`: an admin
-- overrode the check for this one letter and its own bytes went out), the SHA-256 of the
-- letter's value, and the reason the admin typed for an override.
ALTER TABLE redrive_audit
    ADD COLUMN provenance      TEXT NOT NULL DEFAULT 'genuine',
    ADD COLUMN value_sha256    TEXT,
    ADD COLUMN override_reason TEXT;
ALTER TABLE redrive_audit
    ADD CONSTRAINT redrive_audit_override_has_reason
        CHECK (provenance = 'genuine' OR (override_reason IS NOT NULL AND value_sha256 IS NOT NULL));
