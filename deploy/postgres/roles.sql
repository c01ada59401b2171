-- sluice's PostgreSQL roles: one per kind of work, none a superuser, none able to create
-- databases or roles. Run it as an administrator (the compose init script, or
-- `sluice provision --roles deploy/postgres/roles.sql`), in the database sluice loads; it is
-- idempotent. It sets no password: `sluice provision` sets each role's password from a secret
-- (SLUICE_PG_LOADER_PASSWORD, ...), and deploy/postgres/init-roles.sh does the same for the
-- compose init. Tables, their owners and grants are made by `sluice provision`, which knows the
-- pipelines (see deploy/postgres/README.md for the whole model).
--
--   sluice_loader       the validator: DELETE + COPY into the staging tables of its pipelines,
--                       records fencing tokens in sluice_fences
--   sluice_partitioner  the partitioner: owns the partitioned target tables, so it creates,
--                       detaches, exports and drops their partitions (never the target itself:
--                       the event trigger below refuses that), records fencing tokens
--   sluice_dbt          the dbt runner: reads staging, upserts the target, records fencing
--                       tokens, creates its own views and temporary tables
--   sluice_reader       read-only: targets, staging, sluice_fences (a console, an analyst)
--
-- The fetcher, the sensor and the alerter have no database role at all.

DO $roles$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['sluice_loader', 'sluice_partitioner', 'sluice_dbt', 'sluice_reader'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I LOGIN', r);
    END IF;
    -- Re-asserted on every run, so a role someone widened by hand is narrowed again.
    EXECUTE format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS', r);
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), r);
  END LOOP;
END
$roles$;

-- dbt's incremental upsert stages rows in a temporary table.
DO $temp$
BEGIN
  EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO sluice_dbt', current_database());
END
$temp$;

-- Nobody creates objects in public unless granted below or by `sluice provision` (PostgreSQL
-- 15's default; older servers let every role create there).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- The partitioner owns the target tables because PostgreSQL lets only a table's owner attach,
-- detach and drop its partitions. Owning them would also let it drop a target table itself: this
-- event trigger refuses, inside the dropping transaction, any DROP by a member of
-- sluice_partitioner (other than a superuser) of a table that is not a daily partition
-- (<table>_pYYYYMMDD, the only names the partitioner makes).
CREATE OR REPLACE FUNCTION public.sluice_guard_drop() RETURNS event_trigger
LANGUAGE plpgsql AS $guard$
DECLARE
  obj record;
BEGIN
  IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
     OR NOT pg_catalog.pg_has_role(current_user, 'sluice_partitioner', 'MEMBER') THEN
    RETURN;
  END IF;
  FOR obj IN SELECT * FROM pg_catalog.pg_event_trigger_dropped_objects() LOOP
    IF obj.object_type = 'table' AND obj.object_name !~ '_p[0-9]{8}$' THEN
      RAISE EXCEPTION 'sluice: % may drop daily partitions only, not table %.%',
        current_user, obj.schema_name, obj.object_name
        USING ERRCODE = 'insufficient_privilege';
    END IF;
  END LOOP;
END
$guard$;
REVOKE ALL ON FUNCTION public.sluice_guard_drop() FROM PUBLIC;

DO $trigger$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'sluice_guard_drop') THEN
    CREATE EVENT TRIGGER sluice_guard_drop ON sql_drop EXECUTE FUNCTION public.sluice_guard_drop();
  END IF;
END
$trigger$;
