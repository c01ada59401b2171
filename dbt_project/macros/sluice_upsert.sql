{#- The model of a pipeline's target: upserts the run's staged slice into the partitioned target the
    partitioner created. A pipeline's model is just
        {{ sluice_upsert('events') }}
    (staged defaults to ref('stg_<pipeline>')). Key, version and partition columns come from the
    pipeline's contract (var sluice_pipelines, see sluice_spec). It sets everything the target
    needs, so no model can forget one:
    - materialized 'sluice_upsert' (below): one statement, in one transaction with the fence
      pre-hook, that looks every staged key up once, deletes the stored versions it replaces from
      the partition that holds each of them, inserts the winners (PostgreSQL routes them to the
      partition of their date) and records what it did in sluice_upsert_counts;
    - require_partitioned_target (dbt must never create the target), full_refresh false;
    - the fence pre-hook, so a run that lost its lease cannot commit.
    The model's own query (what `dbt compile` shows) is the run's slice, one row per key: the
    greatest version (equal versions broken on the other columns, greatest first, in contract
    order, so a rerun picks the same row); without a version column the greatest row. The
    materialization decides which of those win against the stored rows: new keys, versions
    greater than the stored one, and the same version from an earlier date (so the stored row, and
    its partition, do not depend on the order dates run in; a rerun is a no-op). Without a version
    column the last file run wins: every staged row that differs from the stored one replaces it. -#}
{% macro sluice_upsert(pipeline, staged=none) %}
  {{- config(
      materialized='sluice_upsert',
      full_refresh=false,
      pre_hook="{{ sluice_fence_check() }}",
      meta={'sluice_pipeline': pipeline}
  ) -}}
  {{- require_partitioned_target(this) -}}
  {%- set spec = sluice_spec(pipeline) -%}
  {%- set source_rel = staged if staged is not none else ref('stg_' ~ pipeline) -%}
  {%- if spec is none %}
-- pipeline {{ pipeline }} is not in this run's config: a placeholder so the project compiles
select * from {{ source_rel }} where false
  {%- else -%}
  {%- set keys = spec['key'] -%}
  {%- set version = spec['version'] -%}
  {%- set cols = spec['columns'] + [spec['partition']] -%}
  {%- set rest = [] -%}
  {%- for c in spec['columns'] if c not in keys and c != version -%}{%- do rest.append(c) -%}{%- endfor %}
select distinct on ({{ keys | join(', ') }})
  {%- for c in cols %}
    {{ c }}{{ "," if not loop.last }}
  {%- endfor %}
from {{ source_rel }}
order by {{ keys | join(', ') }}
  {%- if version %}, {{ version }} desc{% endif %}
  {%- for c in rest %}, {{ c }} desc{% endfor %}
  {%- endif %}
{% endmacro %}


{#- The upsert statement for a model's query (one row per key, see sluice_upsert). One pass:
    j looks each staged key up in the target once (sluice_stored_rows: through the key index, in
    the partitions whose key range holds it, or one hash join when the slice is large) and is the
    only read of the target; d deletes exactly the stored rows that lose, each in the partition j
    found it in (the partition column is in the join, so PostgreSQL prunes to that partition at
    run time); c records inserted / updated / unchanged per partition of the stored row
    (sluice_upsert_counts, read and removed by the dbt-runner after dbt: the counts come from the
    statement that did the work, in its transaction); the INSERT adds the winners, so the
    statement's row count, which dbt reports as rows_affected, is inserted + updated. -#}
{% macro sluice_upsert_sql(pipeline, spec, target_relation, sql, plan) %}
  {%- set keys = spec['key'] -%}
  {%- set version = spec['version'] -%}
  {%- set part = spec['partition'] -%}
  {%- set cols = spec['columns'] + [part] -%}
with {{ sluice_lookup_ctes(target_relation, spec, plan) }}s as (
{{ sql }}
), j as materialized (
    select s.*,
           t.sluice_stored_in,
           t.{{ part }} as sluice_stored_at,
           t.sluice_stored_in is null as sluice_new,
           t.sluice_stored_in is not null and (
  {%- if version %}
               s.{{ version }} > t.{{ version }}
               or (s.{{ version }} = t.{{ version }} and s.{{ part }} < t.{{ part }})
  {%- else %}
               ({% for c in cols %}s.{{ c }}{{ ", " if not loop.last }}{% endfor %})
               is distinct from ({% for c in cols %}t.{{ c }}{{ ", " if not loop.last }}{% endfor %})
  {%- endif %}
           ) as sluice_wins
    from s
    left join lateral ({{ sluice_stored_rows(target_relation, spec, 's', plan) }}) as t on true
), d as (
    delete from {{ target_relation }} as t
    using j
    where j.sluice_wins
      and {% for k in keys %}t.{{ k }} = j.{{ k }} and {% endfor %}t.{{ part }} = j.sluice_stored_at
), c as (
    insert into sluice_upsert_counts (run_id, pipeline, stored_in, inserted, updated, unchanged)
    select '{{ sluice_run_id() }}', '{{ pipeline }}', sluice_stored_in,
           count(*) filter (where sluice_new),
           count(*) filter (where sluice_wins),
           count(*) filter (where not sluice_new and not sluice_wins)
    from j
    group by sluice_stored_in
), stale as (
    -- counts an earlier attempt of this run committed (its completion was lost), and any nobody
    -- read (hand runs)
    delete from sluice_upsert_counts
    where (run_id = '{{ sluice_run_id() }}' and pipeline = '{{ pipeline }}') or recorded < now() - interval '1 day'
)
insert into {{ target_relation }} ({{ cols | join(', ') }})
select {{ cols | join(', ') }}
from j
where j.sluice_new or j.sluice_wins
{% endmacro %}


{#- The stored rows (all columns, and sluice_stored_in: the partition's oid) whose key equals the
    key of row `outer` (a LATERAL subquery of a query over the staged keys). With plan 'index' it
    looks only in the partitions whose key range (sluice_kr, see sluice_lookup_ctes) holds the key:
    a key newer than all history costs no probe at all, and a key one key index probe per
    partition that may hold it instead of one per partition; the partition column's bounds in the
    probe let PostgreSQL prune to that partition at run time (OFFSET 0 keeps the probe a
    parameterized subquery run only for the partitions whose range holds the key). With plan
    'probe' (no SELECT on the partitions themselves) a key index probe per key and partition.
    Otherwise a plain join PostgreSQL plans itself (a hash join for a
    large slice). -#}
{% macro sluice_stored_rows(relation, spec, outer, plan) %}
  {%- set keys = spec['key'] -%}
  {%- set part = spec['partition'] -%}
  {%- if plan == 'index' %}
select r.*
from (select * from sluice_kr where {{ outer }}.{{ keys[0] }} between sluice_kr.mn and sluice_kr.mx offset 0) as kr
cross join lateral (
    select t.tableoid as sluice_stored_in, t.* from {{ relation }} as t
    where {% for k in keys %}t.{{ k }} = {{ outer }}.{{ k }} and {% endfor %}t.{{ part }} >= kr.lo and t.{{ part }} < kr.hi
    offset 0) as r
  {%- else %}
select t.tableoid as sluice_stored_in, t.*
from {{ relation }} as t
where {% for k in keys %}t.{{ k }} = {{ outer }}.{{ k }}{{ " and " if not loop.last }}{% endfor %}
    {%- if plan == 'probe' %}
offset 0
    {%- endif %}
  {%- endif %}
{% endmacro %}


{#- The common table expressions sluice_stored_rows needs for plan 'index' (ending in a comma), else
    nothing: sluice_kr, the target's partitions as rows (lo, hi, mn, mx): the partition column's
    bounds and the range of the key's first column stored there (NULLs when empty), read at
    execution time through the key index (two probes per partition). A partition without plain
    bounds (DEFAULT, MINVALUE, MAXVALUE) spans all dates. -#}
{% macro sluice_lookup_ctes(relation, spec, plan) %}
  {%- if plan == 'index' -%}
  {%- set k = spec['key'][0] -%}
  {%- set q -%}
    select quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_catalog.pg_get_expr(c.relpartbound, c.oid)
    from pg_catalog.pg_inherits i
    join pg_catalog.pg_class c on c.oid = i.inhrelid
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where i.inhparent = '{{ relation }}'::regclass
    order by 1
  {%- endset -%}
  {%- set rows = run_query(q).rows if execute else [] -%}
sluice_kr as materialized (
  select cast(null as date) as lo, cast(null as date) as hi, t.{{ k }} as mn, t.{{ k }} as mx
  from {{ relation }} as t where false
  {%- for row in rows -%}
    {%- set m = modules.re.fullmatch("FOR VALUES FROM \\('([0-9-]+)'\\) TO \\('([0-9-]+)'\\)", row[1]) %}
  union all select
    {%- if m %} date '{{ m.group(1) }}', date '{{ m.group(2) }}',{% else %} date '-infinity', date 'infinity',{% endif %}
    (select min({{ k }}) from only {{ row[0] }}), (select max({{ k }}) from only {{ row[0] }})
  {%- endfor %}
), {% endif -%}
{%- endmacro %}


{#- How the staged keys are looked up: 'index' (key index probes, in the partitions whose key
    range may hold each key, see sluice_stored_rows) when that costs less than reading the whole
    target, else 'planner' (PostgreSQL's choice: a hash join for a large slice). PostgreSQL's own
    estimate prices an index probe ~40x what it costs on a cached index and reads 10M rows of
    history with a hash join to look up 1,000 keys (1.5 s against 0.13-0.3 s in the same run,
    bench/RESULTS.md "End to end"). Measured: a probe costs about as much as reading 8 rows in a
    scan. One catalog query (the target's estimated rows and its partitions) and a count of the
    slice that stops at the break-even number. -#}
{% macro sluice_lookup_plan(spec, target_relation) %}
  {%- if not execute -%}{{ return('planner') }}{%- endif -%}
  {%- set staging = api.Relation.create(database=target_relation.database,
        schema=var('staging_schema', target_relation.schema), identifier=spec['staging_table']) -%}
  {%- set q -%}
    select coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint, count(c.oid),
           coalesce(bool_and(pg_catalog.has_table_privilege(c.oid, 'SELECT')), true)
    from pg_catalog.pg_inherits i join pg_catalog.pg_class c on c.oid = i.inhrelid
    where i.inhparent = '{{ target_relation }}'::regclass
  {%- endset -%}
  {%- set row = run_query(q).rows[0] -%}
  {#- The key ranges read each partition directly, which needs SELECT on it (a grant on the parent
      covers only access through the parent): without it, probe every partition. -#}
  {%- set index_plan = 'index' if row[2] else 'probe' -%}
  {%- set stored, parts = row[0] | int, [row[1] | int, 1] | max -%}
  {%- set cap = (stored // (parts * 8)) | int -%}
  {%- if cap < 1 -%}{{ return('planner') }}{%- endif -%}
  {%- set q -%}
    select count(*) from (select 1 from {{ staging }} where {{ spec['partition'] }} = cast('{{ sluice_ds() }}' as date) limit {{ cap + 1 }}) as slice
  {%- endset -%}
  {%- set staged = run_query(q).rows[0][0] | int -%}
  {{ return(index_plan if staged <= cap else 'planner') }}
{% endmacro %}


{#- The materialization of sluice_upsert models: the fence pre-hook, the lookup plan, the upsert
    statement, commit, all in one transaction. It never creates or replaces the target
    (require_partitioned_target runs before it). The session's work_mem and jit come from the
    dbt-runner (PGOPTIONS: config dbt.work_mem; JIT off). -#}
{% materialization sluice_upsert, adapter='postgres' %}
  {%- set target_relation = this.incorporate(type='table') -%}
  {%- set pipeline = config.get('meta', {}).get('sluice_pipeline') -%}
  {%- set spec = sluice_spec(pipeline) -%}
  {%- if spec is none -%}
    {{ exceptions.raise_compiler_error("sluice: model " ~ this ~ " is materialized sluice_upsert but names no configured pipeline") }}
  {%- endif -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  -- BEGIN happens here; the fence check runs inside the transaction
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {#- Where the statement records its counts; `sluice provision` and the dbt-runner create it, this
      covers a hand run on a database neither has prepared. -#}
  {% call statement('sluice_counts_table') %}
    do $sluice_counts$ begin
      if to_regclass('sluice_upsert_counts') is null then
        create table if not exists sluice_upsert_counts (run_id text not null, pipeline text not null,
          stored_in oid, inserted bigint not null, updated bigint not null, unchanged bigint not null,
          recorded timestamptz not null default now());
      end if;
    end $sluice_counts$
  {% endcall %}
  {%- set plan = sluice_lookup_plan(spec, target_relation) -%}
  {%- if plan in ('index', 'probe') -%}
    {% call statement('sluice_plan') %}
      set local enable_hashjoin = off; set local enable_mergejoin = off
    {% endcall %}
  {%- endif %}

  {#- dbt appends its query comment (run, node) at the end, past the 1 kB of a statement that
      pg_stat_activity shows: the upsert names itself first. -#}
  {% call statement('main') %}
    /* sluice upsert run_id={{ sluice_run_id() }} node={{ model.unique_id }} */
    {{ sluice_upsert_sql(pipeline, spec, target_relation, sql, plan) }}
  {% endcall %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {% do adapter.commit() %}
  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}


{#- The run's id (sluice_run_var run_id; 'manual' for a hand run without one), checked to be a
    plain token: the upsert writes it into SQL (its counts). -#}
{% macro sluice_run_id() -%}
  {%- set run_id = sluice_run_var('run_id', 'manual') | string -%}
  {%- if not modules.re.fullmatch('[A-Za-z0-9_-]{1,64}', run_id) -%}
    {{ exceptions.raise_compiler_error("the run's run_id must be a plain token, got '" ~ run_id ~ "'") }}
  {%- endif -%}
  {{- return(run_id) -}}
{%- endmacro %}
