-- Command-state snapshots: mutable, unlike events. total_version (the sum
-- of the covered streams' versions) only grows for one key, so a save never
-- replaces a snapshot that covers more events.
CREATE TABLE snapshots (
    key           TEXT    PRIMARY KEY,
    streams       TEXT    NOT NULL, -- JSON: [{"stream": "...", "version": n}, ...]
    total_version INTEGER NOT NULL,
    state         BLOB    NOT NULL,
    saved_at      INTEGER NOT NULL  -- Unix microseconds, UTC
);
