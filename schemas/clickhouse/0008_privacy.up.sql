-- Erasure (README, "Privacy"; stream/privacy/). Neither table holds an id: only the
-- salted hash of one (keyed BLAKE2b, stream/privacy/subject.py).
--
-- suppressions: the durable copy of the clickstream.suppressions topic, which the
-- embedded broker forgets on restart (re-seeded from here at start). One row per
-- erased id hash and erasure; an erasure repeated adds a row, the hash stays.
CREATE TABLE IF NOT EXISTS {database}.suppressions
(
    hash         String,
    erasure_id   String,
    requested_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (hash, erasure_id)
;

-- erasures: the audit, one row per erasure when it completed. subject_hash is the hash
-- of the id asked for; hashes those of every id erased with it (a user id's devices);
-- rows_removed counts the rows deleted per table. Erasing again adds a row (zeros).
CREATE TABLE IF NOT EXISTS {database}.erasures
(
    erasure_id   String,
    subject_hash String,
    hashes       Array(String),
    requested_at DateTime64(3, 'UTC'),
    completed_at DateTime64(3, 'UTC'),
    seconds      Float64,
    status       LowCardinality(String),
    rows_removed Map(String, UInt64)
)
ENGINE = ReplacingMergeTree
ORDER BY erasure_id
;
