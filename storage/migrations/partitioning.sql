-- Plain PostgreSQL (no TimescaleDB): readings and scores become PARTITION BY RANGE (ts)
-- parents with one partition per UTC day, created ahead by citywatch_ensure_partitions(),
-- plus a DEFAULT partition so late or far-future rows are never refused.
-- Existing (version 1) tables are converted: rename, create partitioned, copy, drop.

-- One UTC day's partition of `parent`. Rows of that day already sitting in the default
-- partition move into it first: ATTACH refuses while the default holds rows of the range.
CREATE OR REPLACE FUNCTION citywatch_create_partition(parent text, day date)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
DECLARE
    part text := parent || '_p' || to_char(day, 'YYYYMMDD');
    dflt text := parent || '_default';
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Hold writers off the parent until the day is attached (milliseconds, and only when
    -- a partition is new): ATTACH alone lets a concurrent insert route a row of this day
    -- to the default partition with a stale partition map, and fail its constraint.
    -- Writers lock readings before scores, and so does citywatch_ensure_partitions.
    EXECUTE format('LOCK TABLE %I IN SHARE ROW EXCLUSIVE MODE', parent);
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   part, parent);
    EXECUTE format(
        'WITH moved AS (DELETE FROM %I WHERE ts >= %L AND ts < %L RETURNING *)'
        ' INSERT INTO %I SELECT * FROM moved', dflt, lo, hi, part);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   parent, part, lo, hi);
    RETURN true;
END
$fn$;

-- Partitions for yesterday .. today + days_ahead, and for every day that has rows in a
-- default partition (late or early data lands there first and is re-homed here).
-- Returns how many partitions it created. Safe to call concurrently: one caller works,
-- the others return 0 at once.
CREATE OR REPLACE FUNCTION citywatch_ensure_partitions(days_ahead integer)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
DECLARE
    parent text;
    d date;
    created integer := 0;
    today date := (now() AT TIME ZONE 'UTC')::date;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('citywatch_partitions')) THEN
        RETURN 0;
    END IF;
    FOREACH parent IN ARRAY ARRAY['readings', 'scores'] LOOP
        FOR d IN
            SELECT (today + g)::date FROM generate_series(-1, days_ahead) AS g
        LOOP
            IF citywatch_create_partition(parent, d) THEN
                created := created + 1;
            END IF;
        END LOOP;
        FOR d IN EXECUTE format(
            'SELECT DISTINCT (ts AT TIME ZONE %L)::date FROM %I', 'UTC', parent || '_default')
        LOOP
            IF citywatch_create_partition(parent, d) THEN
                created := created + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN created;
END
$fn$;

-- Retention: drop every daily partition whose whole day is older than now() - retain,
-- and delete expired rows still in a default partition. Returns partitions dropped.
CREATE OR REPLACE FUNCTION citywatch_drop_expired(retain interval)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
DECLARE
    parent text;
    part text;
    cutoff timestamptz := now() - retain;
    dropped integer := 0;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('citywatch_partitions')) THEN
        RETURN 0;
    END IF;
    FOREACH parent IN ARRAY ARRAY['readings', 'scores'] LOOP
        FOR part IN
            SELECT c.relname
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = to_regclass(parent)
              AND c.relname ~ ('^' || parent || '_p[0-9]{8}$')
              AND (to_date(right(c.relname, 8), 'YYYYMMDD') + 1)::timestamp
                  AT TIME ZONE 'UTC' <= cutoff
            ORDER BY c.relname
        LOOP
            EXECUTE format('DROP TABLE %I', part);
            dropped := dropped + 1;
        END LOOP;
        EXECUTE format('DELETE FROM %I WHERE ts < %L', parent || '_default', cutoff);
    END LOOP;
    RETURN dropped;
END
$fn$;

-- Convert one version-1 table into a range-partitioned parent with the same name,
-- columns, constraints and indexes. Views that read it are dropped and recreated.
CREATE OR REPLACE FUNCTION pg_temp.citywatch_partition_table(tbl text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    old text := tbl || '_unpartitioned';
    rec record;
    idx record;
    pk_name text;
    pk_def text;
    nsp text;
    old_ref text;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = to_regclass(tbl)) = 'p' THEN
        RETURN;  -- already partitioned
    END IF;
    -- Views (of other migrations) that read this table, recursively, oldest first.
    CREATE TEMP TABLE IF NOT EXISTS citywatch_saved_views
        (oid oid, nsp text, name text, kind "char", def text);
    INSERT INTO citywatch_saved_views
    WITH RECURSIVE deps(oid) AS (
        SELECT r.ev_class FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
        WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = to_regclass(tbl)
          AND r.ev_class <> to_regclass(tbl)
        UNION
        SELECT r.ev_class FROM deps
        JOIN pg_depend d ON d.refobjid = deps.oid AND d.classid = 'pg_rewrite'::regclass
        JOIN pg_rewrite r ON r.oid = d.objid
        WHERE r.ev_class <> deps.oid
    )
    SELECT c.oid, n.nspname, c.relname, c.relkind, pg_get_viewdef(c.oid)
    FROM deps JOIN pg_class c ON c.oid = deps.oid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE NOT EXISTS (SELECT 1 FROM citywatch_saved_views s WHERE s.oid = c.oid);
    FOR rec IN SELECT * FROM citywatch_saved_views ORDER BY oid DESC LOOP
        IF to_regclass(format('%I.%I', rec.nsp, rec.name)) IS NOT NULL THEN
            EXECUTE format('DROP %s %I.%I CASCADE',
                CASE WHEN rec.kind = 'm' THEN 'MATERIALIZED VIEW' ELSE 'VIEW' END,
                rec.nsp, rec.name);
        END IF;
    END LOOP;

    EXECUTE format('ALTER TABLE %I RENAME TO %I', tbl, old);
    nsp := (SELECT relnamespace::regnamespace::text FROM pg_class
            WHERE oid = to_regclass(old));
    old_ref := format(' ON %s.%I ', nsp, old);
    SELECT conname, pg_get_constraintdef(oid) INTO pk_name, pk_def
    FROM pg_constraint WHERE conrelid = to_regclass(old) AND contype = 'p';
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', old, pk_name);
    EXECUTE format(
        'CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS'
        ' INCLUDING COMMENTS) PARTITION BY RANGE (ts)', tbl, old);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I %s', tbl, pk_name, pk_def);
    -- Secondary indexes keep their names: drop each from the old table, recreate it.
    FOR idx IN
        SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS def
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = to_regclass(old)
    LOOP
        IF position(old_ref IN idx.def) = 0 THEN
            RAISE EXCEPTION 'cannot move index %: %', idx.name, idx.def;
        END IF;
        EXECUTE format('DROP INDEX %I', idx.name);
        EXECUTE replace(idx.def, old_ref, format(' ON %I.%I ', nsp, tbl));
    END LOOP;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', tbl || '_default', tbl);
    -- A partition for every day of existing data, so the copy lands in place.
    FOR rec IN EXECUTE format(
        'SELECT DISTINCT (ts AT TIME ZONE %L)::date AS day FROM %I', 'UTC', old)
    LOOP
        PERFORM citywatch_create_partition(tbl, rec.day);
    END LOOP;
    EXECUTE format('INSERT INTO %I SELECT * FROM %I', tbl, old);
    EXECUTE format('DROP TABLE %I', old);
END
$fn$;

SELECT pg_temp.citywatch_partition_table('readings');
SELECT pg_temp.citywatch_partition_table('scores');

-- Recreate the views dropped above, in their original order.
DO $do$
DECLARE
    rec record;
BEGIN
    IF to_regclass('pg_temp.citywatch_saved_views') IS NULL THEN
        RETURN;
    END IF;
    FOR rec IN SELECT DISTINCT ON (oid) * FROM citywatch_saved_views ORDER BY oid LOOP
        EXECUTE format('CREATE %s %I.%I AS %s',
            CASE WHEN rec.kind = 'm' THEN 'MATERIALIZED VIEW' ELSE 'VIEW' END,
            rec.nsp, rec.name, rtrim(rec.def, ';'));
    END LOOP;
    DROP TABLE citywatch_saved_views;
END
$do$;

SELECT citywatch_ensure_partitions(7);
