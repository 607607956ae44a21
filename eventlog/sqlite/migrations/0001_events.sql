-- The event log. position is the rowid: assigned in commit order by the
-- single writer, gapless because nothing is ever deleted.
CREATE TABLE events (
    position    INTEGER PRIMARY KEY,
    stream_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    type        TEXT    NOT NULL,
    data        TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL -- Unix microseconds, UTC
);

-- Read a stream from a version; also the version check of every append.
CREATE UNIQUE INDEX events_stream_version ON events (stream_id, version);

-- Read the feed filtered by event type.
CREATE INDEX events_type_position ON events (type, position);

-- Events are immutable.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are immutable');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are immutable');
END;

-- Idempotency keys: the positions an append with a command id recorded.
CREATE TABLE commands (
    command_id     TEXT    PRIMARY KEY,
    first_position INTEGER NOT NULL,
    last_position  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER commands_no_update BEFORE UPDATE ON commands
BEGIN
    SELECT RAISE(ABORT, 'command records are immutable');
END;

CREATE TRIGGER commands_no_delete BEFORE DELETE ON commands
BEGIN
    SELECT RAISE(ABORT, 'command records are immutable');
END;
