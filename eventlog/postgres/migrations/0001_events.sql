-- The event log.
--
-- Positions are gapless and in commit order: an append takes them from the
-- one row of log_head (UPDATE ... RETURNING) after every version check has
-- passed, and holds that row's lock until it commits. Sequences are not
-- used: they leave gaps on rollback and hand out numbers out of commit
-- order.

-- The last position taken; one row.
CREATE TABLE log_head (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    position bigint  NOT NULL CHECK (position >= 0)
) WITH (fillfactor = 10);

INSERT INTO log_head (id, position) VALUES (true, 0);

-- One row per stream ever named by an append (version 0 for a stream that
-- was only read or whose append was refused). Appends lock these rows in
-- stream-id order: FOR UPDATE for streams they write, FOR SHARE for streams
-- they only read.
CREATE TABLE streams (
    stream_id text COLLATE "C" PRIMARY KEY,
    version   bigint NOT NULL CHECK (version >= 0)
) WITH (fillfactor = 70);

CREATE TABLE events (
    position    bigint      PRIMARY KEY CHECK (position >= 1),
    stream_id   text        COLLATE "C" NOT NULL,
    version     bigint      NOT NULL CHECK (version >= 1),
    type        text        NOT NULL,
    data        json        NOT NULL,
    metadata    json        NOT NULL,
    recorded_at timestamptz NOT NULL
);

-- Read a stream from a version; a second line of defence for versions.
CREATE UNIQUE INDEX events_stream_version ON events (stream_id, version);

-- Read the feed filtered by event type.
CREATE INDEX events_type_position ON events (type, position);

-- Idempotency keys: the positions an append with a command id recorded.
CREATE TABLE commands (
    command_id     text   PRIMARY KEY,
    first_position bigint NOT NULL,
    last_position  bigint NOT NULL
);

-- Events, command records and the head never change or go away.
CREATE FUNCTION eventlog_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'eventlog: % is immutable (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION eventlog_immutable();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION eventlog_immutable();
CREATE TRIGGER commands_immutable BEFORE UPDATE OR DELETE ON commands
    FOR EACH ROW EXECUTE FUNCTION eventlog_immutable();
CREATE TRIGGER commands_no_truncate BEFORE TRUNCATE ON commands
    FOR EACH STATEMENT EXECUTE FUNCTION eventlog_immutable();
CREATE TRIGGER log_head_no_delete BEFORE DELETE ON log_head
    FOR EACH ROW EXECUTE FUNCTION eventlog_immutable();
CREATE TRIGGER log_head_no_truncate BEFORE TRUNCATE ON log_head
    FOR EACH STATEMENT EXECUTE FUNCTION eventlog_immutable();
