-- An Idempotency-Key is bound to the request it first came with: a digest of
-- its body (the same key with another body is refused). Answers kept before
-- this migration have none and are replayed as before until they expire.
-- A row with status 0 marks a request still in flight; its body is the
-- owning request's claim.
ALTER TABLE idempotent_answers ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
