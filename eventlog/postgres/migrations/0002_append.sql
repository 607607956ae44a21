-- eventlog_append commits a batch of appends in one statement (one round
-- trip), each append checked on its own: a refused append writes nothing
-- and does not affect the others.
--
-- Locks, always in this order (so that batches and single appends never
-- wait on each other in a cycle):
--   1. placeholder rows for streams not seen before, inserted in stream-id
--      order (a concurrent insert of the same id waits for its inserter);
--   2. every stream row of the batch, in stream-id order, FOR UPDATE when
--      some append of the batch writes it, FOR SHARE otherwise;
--   3. the log_head row, only when some append was accepted, after every
--      check.
--
-- Arguments (1-based; the caller builds them):
--   p_streams    every stream of the batch, unique, sorted by bytes
--   p_written    per stream: some append of the batch writes to it
--   x_slot       per expected version: the stream's index in p_streams
--   x_expected   per expected version: the version the append expects
--   x_new        per expected version: the stream's version after the append
--   a_command    per append: its idempotency key, NULL when none
--   a_xfirst, a_xlast  per append: its range in the x_ arrays
--   a_events     per append: how many events it has (its events follow
--                those of the appends before it in the e_ arrays)
--   e_*          per event: stream, version (if accepted), type, data,
--                metadata
--
-- Returns one row per append: status 0 (accepted; first/last position),
-- 1 (conflict; actual holds the current version of each of its expected
-- streams, in order) or 2 (duplicate command id; first/last position of the
-- first append).
--
-- A command id recorded by a concurrent transaction between the check and
-- the insert fails the whole statement with unique_violation on
-- commands_pkey; the caller runs the batch again, and the check then sees
-- the committed command.
CREATE FUNCTION eventlog_append(
    p_streams text[], p_written boolean[],
    x_slot int[], x_expected bigint[], x_new bigint[],
    a_command text[], a_xfirst int[], a_xlast int[], a_events int[],
    e_stream text[], e_version bigint[], e_type text[], e_data text[], e_metadata text[],
    p_recorded_at timestamptz)
RETURNS TABLE (append_index int, status int, first_position bigint, last_position bigint, actual bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    n_streams int := cardinality(p_streams);
    n_appends int := cardinality(a_events);
    cur bigint[];
    st int[];
    fp bigint[];
    lp bigint[];
    e_pos bigint[];
    v bigint;
    dup_first bigint;
    dup_last bigint;
    i int;
    j int;
    k int;
    e_at int := 0;
    total bigint := 0;
    base bigint;
    conflicted boolean;
    acts bigint[];
    c_key text[] := '{}';
    c_first bigint[] := '{}';
    c_last bigint[] := '{}';
BEGIN
    -- 1. Placeholders for new streams, in order.
    INSERT INTO streams (stream_id, version)
    SELECT s, 0 FROM unnest(p_streams) AS s
    ON CONFLICT (stream_id) DO NOTHING;

    -- 2. Lock every stream in order and read its version.
    cur := array_fill(0::bigint, ARRAY[n_streams]);
    FOR i IN 1 .. n_streams LOOP
        IF p_written[i] THEN
            SELECT s.version INTO STRICT v FROM streams s WHERE s.stream_id = p_streams[i] FOR UPDATE;
        ELSE
            SELECT s.version INTO STRICT v FROM streams s WHERE s.stream_id = p_streams[i] FOR SHARE;
        END IF;
        cur[i] := v;
    END LOOP;

    -- 3. Each append in order, against the versions as the batch moves them.
    st := array_fill(0, ARRAY[n_appends]);
    fp := array_fill(0::bigint, ARRAY[n_appends]);
    lp := array_fill(0::bigint, ARRAY[n_appends]);
    e_pos := array_fill(0::bigint, ARRAY[cardinality(e_stream)]);
    FOR i IN 1 .. n_appends LOOP
        IF a_command[i] IS NOT NULL THEN
            SELECT c.first_position, c.last_position INTO dup_first, dup_last
            FROM commands c WHERE c.command_id = a_command[i];
            IF FOUND THEN
                st[i] := 2;
                fp[i] := dup_first;
                lp[i] := dup_last;
                e_at := e_at + a_events[i];
                CONTINUE;
            END IF;
        END IF;
        conflicted := false;
        FOR j IN a_xfirst[i] .. a_xlast[i] LOOP
            IF cur[x_slot[j]] <> x_expected[j] THEN
                conflicted := true;
            END IF;
        END LOOP;
        IF conflicted THEN
            acts := '{}';
            FOR j IN a_xfirst[i] .. a_xlast[i] LOOP
                acts := acts || cur[x_slot[j]];
            END LOOP;
            append_index := i; status := 1; first_position := 0; last_position := 0; actual := acts;
            RETURN NEXT;
            st[i] := 1;
            e_at := e_at + a_events[i];
            CONTINUE;
        END IF;
        FOR j IN a_xfirst[i] .. a_xlast[i] LOOP
            cur[x_slot[j]] := x_new[j];
        END LOOP;
        fp[i] := total + 1;
        FOR k IN 1 .. a_events[i] LOOP
            e_pos[e_at + k] := total + k;
        END LOOP;
        e_at := e_at + a_events[i];
        total := total + a_events[i];
        lp[i] := total;
    END LOOP;

    IF total > 0 THEN
        UPDATE streams s SET version = u.v
        FROM unnest(p_streams, cur) AS u(id, v)
        WHERE s.stream_id = u.id AND s.version <> u.v;

        -- 4. The global position lock, held until commit.
        UPDATE log_head SET position = position + total WHERE id RETURNING position - total INTO base;

        INSERT INTO events (position, stream_id, version, type, data, metadata, recorded_at)
        SELECT base + u.p, u.s, u.v, u.t, u.d::json, u.m::json, p_recorded_at
        FROM unnest(e_pos, e_stream, e_version, e_type, e_data, e_metadata) AS u(p, s, v, t, d, m)
        WHERE u.p > 0;

        FOR i IN 1 .. n_appends LOOP
            IF st[i] = 0 THEN
                fp[i] := base + fp[i];
                lp[i] := base + lp[i];
                IF a_command[i] IS NOT NULL THEN
                    c_key := c_key || a_command[i];
                    c_first := c_first || fp[i];
                    c_last := c_last || lp[i];
                END IF;
            END IF;
        END LOOP;
        IF cardinality(c_key) > 0 THEN
            INSERT INTO commands (command_id, first_position, last_position)
            SELECT * FROM unnest(c_key, c_first, c_last);
        END IF;
    END IF;

    FOR i IN 1 .. n_appends LOOP
        IF st[i] <> 1 THEN
            append_index := i; status := st[i]; first_position := fp[i]; last_position := lp[i]; actual := NULL;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
