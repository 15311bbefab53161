-- Two NOLOGIN group roles; deployments grant them to login users:
--   citywatch_writer: the worker, ingest and alert services (read and write data, no DDL);
--   citywatch_reader: Grafana (read only).
-- Roles are cluster-wide and need CREATEROLE: without it (some managed services) the
-- roles are skipped with a notice and an administrator creates them.
DO $do$
DECLARE
    role_name text;
    fn text;
    can_create boolean := (SELECT rolsuper OR rolcreaterole FROM pg_roles
                           WHERE rolname = current_user);
BEGIN
    FOREACH role_name IN ARRAY ARRAY['citywatch_writer', 'citywatch_reader'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            IF can_create THEN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            ELSE
                RAISE NOTICE 'role % missing and % may not create roles; skipped',
                    role_name, current_user;
            END IF;
        END IF;
    END LOOP;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'citywatch_writer') THEN
        EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO citywatch_writer',
                       current_database());
        GRANT USAGE ON SCHEMA public TO citywatch_writer;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public
            TO citywatch_writer;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO citywatch_writer;
        -- Maintenance runs through SECURITY DEFINER functions, so the writer needs no DDL.
        GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO citywatch_writer;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO citywatch_writer;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT USAGE, SELECT ON SEQUENCES TO citywatch_writer;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT EXECUTE ON FUNCTIONS TO citywatch_writer;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'citywatch_reader') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO citywatch_reader',
                       current_database());
        GRANT USAGE ON SCHEMA public TO citywatch_reader;
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO citywatch_reader;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT SELECT ON TABLES TO citywatch_reader;
    END IF;

    -- Functions default to EXECUTE for PUBLIC; the maintenance ones write (as their
    -- owner), so only the owner and the writer may call them.
    FOREACH fn IN ARRAY ARRAY['citywatch_ensure_partitions(integer)',
                              'citywatch_drop_expired(interval)',
                              'citywatch_create_partition(text, date)',
                              'citywatch_refresh_rollups()'] LOOP
        IF to_regprocedure(fn) IS NOT NULL THEN
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
        END IF;
    END LOOP;
END
$do$;
