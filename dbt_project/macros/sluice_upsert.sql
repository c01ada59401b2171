{#- The incremental model of a pipeline: upserts the run's staged slice into the partitioned
    target the partitioner created. A pipeline's model is just
        {{ sluice_upsert('events') }}
    (staged defaults to ref('stg_<pipeline>')). Key, version and partition columns come from the
    pipeline's contract (var sluice_pipelines, see sluice_spec). It sets everything the target
    needs, so no model can forget one:
    - incremental, delete+insert on the contract's key: one transaction deletes every row whose
      key the query returns (from whichever partition holds it) and inserts the new version,
      which PostgreSQL routes to the partition of its date;
    - full_refresh false (a full refresh would rebuild the table unpartitioned), on_schema_change
      fail, require_partitioned_target (dbt must never create the target);
    - the fence pre-hook, so a run that lost its lease cannot commit.
    The query returns only the rows that must win. With a version column: one row per key in the
    file (the greatest version; equal versions broken on the other columns, greatest first, in
    contract order, so a rerun picks the same row), then new keys, versions greater than the
    stored one, and the same version from an earlier date (so the stored row, and its partition,
    do not depend on the order dates run in; a rerun is a no-op). Without a version column the
    last file run wins: every staged row that differs from the stored one replaces it. -#}
{% macro sluice_upsert(pipeline, staged=none) %}
  {%- set spec = sluice_spec(pipeline) -%}
  {%- set key = none -%}
  {%- if spec is not none -%}
    {%- set key = spec['key'][0] if spec['key'] | length == 1 else spec['key'] -%}
  {%- endif -%}
  {{- config(
      materialized='incremental',
      unique_key=key,
      incremental_strategy='delete+insert',
      full_refresh=false,
      on_schema_change='fail',
      pre_hook="{{ sluice_fence_check() }}",
      meta={'sluice_pipeline': pipeline}
  ) -}}
  {{- require_partitioned_target(this) -}}
  {%- set source_rel = staged if staged is not none else ref('stg_' ~ pipeline) -%}
  {%- if spec is none %}
-- pipeline {{ pipeline }} is not in this run's config: a placeholder so the project compiles
select * from {{ source_rel }} where false
  {%- else -%}
  {%- set keys = spec['key'] -%}
  {%- set version = spec['version'] -%}
  {%- set part = spec['partition'] -%}
  {%- set cols = spec['columns'] + [part] -%}
  {%- set rest = [] -%}
  {%- for c in spec['columns'] if c not in keys and c != version -%}{%- do rest.append(c) -%}{%- endfor %}
with staged as (
    select distinct on ({{ keys | join(', ') }})
    {%- for c in cols %}
        {{ c }}{{ "," if not loop.last }}
    {%- endfor %}
    from {{ source_rel }}
    order by {{ keys | join(', ') }}
    {%- if version %}, {{ version }} desc{% endif %}
    {%- for c in rest %}, {{ c }} desc{% endfor %}
)

select
{%- for c in cols %}
    s.{{ c }}{{ "," if not loop.last }}
{%- endfor %}
from staged as s
{%- if is_incremental() %}
left join {{ this }} as t
    on {% for k in keys %}t.{{ k }} = s.{{ k }}{{ " and " if not loop.last }}{% endfor %}
where t.{{ keys[0] }} is null
  {%- if version %}
   or s.{{ version }} > t.{{ version }}
   or (s.{{ version }} = t.{{ version }} and s.{{ part }} < t.{{ part }})
  {%- else %}
   or ({% for c in cols %}s.{{ c }}{{ ", " if not loop.last }}{% endfor %})
      is distinct from ({% for c in cols %}t.{{ c }}{{ ", " if not loop.last }}{% endfor %})
  {%- endif %}
{%- endif %}
  {%- endif %}
{% endmacro %}
