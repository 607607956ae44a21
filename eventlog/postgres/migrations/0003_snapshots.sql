-- Command-state snapshots: mutable, unlike events. total_version (the sum
-- of the covered streams' versions) only grows for one key, so a save never
-- replaces a snapshot that covers more events.
CREATE TABLE snapshots (
    key           text        PRIMARY KEY,
    streams       json        NOT NULL, -- [{"stream": "...", "version": n}, ...]
    total_version bigint      NOT NULL,
    state         bytea       NOT NULL,
    saved_at      timestamptz NOT NULL
);
