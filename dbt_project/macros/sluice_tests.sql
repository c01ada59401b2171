{#- Tests scoped to the run. A run writes only the keys of its date's staged slice, so on a
    pipeline's target (a sluice_upsert model) the key tests look at those keys, through the key
    index, and the not-null tests at the rows of the run's partition, instead of reading the whole
    table every run: a run's tests cost what its data costs, not what the history holds. They are
    scoped while a run's date is known (sluice_run_var ds, which the dbt-runner passes); without
    it (a hand-run `dbt test`) they read the whole table. `sluice audit` checks whole tables on a
    schedule (dbt_project/README.md). -#}

{#- The pipeline whose sluice_upsert target relation is, or none. -#}
{% macro sluice_target_pipeline(relation) %}
  {%- if execute and relation is not none -%}
    {%- for node in graph.nodes.values() if node.resource_type == 'model'
          and node.config.materialized == 'sluice_upsert'
          and (node.alias or node.name) == relation.identifier and node.schema == relation.schema -%}
      {{- return(node.config.meta.get('sluice_pipeline')) -}}
    {%- endfor -%}
  {%- endif -%}
  {{- return(none) -}}
{% endmacro %}

{#- Whether the run's tests are scoped to its date: a date is known and dbt runs tests. -#}
{% macro sluice_scoped() %}
  {{- return(execute and sluice_run_var('ds') is not none
      and flags.WHICH in ('build', 'test', 'run', 'retry')) -}}
{% endmacro %}

{#- Keys stored more than once, among the keys of the run's staged slice when scoped, else in the
    whole target. Index plan: key index probes in the partitions whose key range holds the key
    (sluice_stored_rows, as the upsert looks them up); else a semi-join PostgreSQL plans itself
    (a hash join over the target when the slice is large). -#}
{% macro sluice_duplicate_keys(relation, spec, scoped) %}
  {%- set keys = spec['key'] -%}
  {%- if not scoped %}
select {{ keys | join(', ') }}, count(*) as n_records
from {{ relation }}
where {% for k in keys %}{{ k }} is not null{{ " and " if not loop.last }}{% endfor %}
group by {{ keys | join(', ') }}
having count(*) > 1
  {%- else -%}
  {%- set staging = api.Relation.create(database=relation.database,
        schema=var('staging_schema', relation.schema), identifier=spec['staging_table']) -%}
  {%- set slice -%}
    select distinct {{ keys | join(', ') }} from {{ staging }}
    where {{ spec['partition'] }} = cast('{{ sluice_ds() }}' as date)
  {%- endset -%}
  {%- set plan = sluice_lookup_plan(spec, relation) -%}
  {%- if plan in ('index', 'probe') %}
-- the keys of the run ({{ sluice_ds() }}), each looked up through the key index in the partitions
-- whose key range holds it
with {{ sluice_lookup_ctes(relation, spec, plan) }}s as ({{ slice }})
select {% for k in keys %}s.{{ k }}, {% endfor %}n.n_records
from s
cross join lateral (
    select count(*) as n_records from ({{ sluice_stored_rows(relation, spec, 's', plan) }}) as stored
) as n
where n.n_records > 1
  {%- else %}
-- the keys of the run ({{ sluice_ds() }})
select {% for k in keys %}t.{{ k }}, {% endfor %}count(*) as n_records
from {{ relation }} as t
where ({{ keys | join(', ') }}) in ({{ slice }})
group by {% for k in keys %}t.{{ k }}{{ ", " if not loop.last }}{% endfor %}
having count(*) > 1
  {%- endif -%}
  {%- endif %}
{% endmacro %}

{#- The base relation of a test's model argument (dbt may wrap it in a where subquery). -#}
{% macro sluice_test_relation(model) %}
  {%- if model is string or model.identifier is not defined -%}{{ return(none) }}{%- endif -%}
  {{- return(model) -}}
{% endmacro %}

{#- Generic test `unique` (dbt's, overridden for this project): on the key column of a pipeline's
    target, scoped to the run's keys; anywhere else, dbt's own. -#}
{% macro default__test_unique(model, column_name) %}
  {%- set rel = sluice_test_relation(model) -%}
  {%- set pipeline = sluice_target_pipeline(rel) -%}
  {%- set spec = sluice_spec(pipeline) if pipeline else none -%}
  {%- if spec is not none and spec['key'] == [column_name] %}
select {{ column_name }} as unique_field, n_records
from ({{ sluice_duplicate_keys(rel, spec, sluice_scoped()) }}) as dups
  {%- else %}
select
    {{ column_name }} as unique_field,
    count(*) as n_records
from {{ model }}
where {{ column_name }} is not null
group by {{ column_name }}
having count(*) > 1
  {%- endif %}
{% endmacro %}

{#- Generic test `not_null` (dbt's, overridden for this project): on a pipeline's target, a column
    the table declares NOT NULL passes without reading it (PostgreSQL already refused every NULL),
    and another is checked in the run's partition, where every row the run wrote is; anywhere
    else, dbt's own. -#}
{% macro default__test_not_null(model, column_name) %}
  {%- set rel = sluice_test_relation(model) -%}
  {%- set pipeline = sluice_target_pipeline(rel) -%}
  {%- set spec = sluice_spec(pipeline) if pipeline else none -%}
  {%- set column_list = '*' if should_store_failures() else column_name -%}
  {%- if spec is not none and sluice_scoped() and sluice_declared_not_null(rel, column_name) %}
-- {{ rel }}.{{ column_name }} is declared NOT NULL: PostgreSQL refuses NULLs there
select {{ column_list }} from {{ rel }} where false
  {%- elif spec is not none and sluice_scoped() %}
-- the rows of the run's partition
select {{ column_list }}
from {{ rel }}
where {{ spec['partition'] }} = cast('{{ sluice_ds() }}' as date) and {{ column_name }} is null
  {%- else %}
select {{ column_list }}
from {{ model }}
where {{ column_name }} is null
  {%- endif %}
{% endmacro %}

{#- Whether relation's column carries a NOT NULL constraint (a catalog lookup). -#}
{% macro sluice_declared_not_null(relation, column_name) %}
  {%- set q -%}
    select a.attnotnull from pg_catalog.pg_attribute a
    where a.attrelid = '{{ relation }}'::regclass and a.attname = '{{ column_name }}' and not a.attisdropped
  {%- endset -%}
  {%- if not modules.re.fullmatch('[a-z_][a-z0-9_]{0,62}', column_name | string) -%}{{ return(false) }}{%- endif -%}
  {%- set rows = run_query(q).rows -%}
  {{- return(rows | length > 0 and rows[0][0]) -}}
{% endmacro %}
