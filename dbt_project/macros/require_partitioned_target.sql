{#- Fails the model before any SQL runs unless its target already exists as a partitioned table.

    dbt's incremental materialization creates the target with CREATE TABLE AS when it does not
    exist yet. For a target the partitioner owns that would be an ordinary, unpartitioned table:
    every later partition would fail to attach and the upsert rules would silently change. So an
    incremental model that loads a partitioned table calls this at the top of its body; it runs at
    compile time of the execution phase, i.e. before the materialization issues any statement.
    Commands that only compile or read (`compile`, `docs generate`, which the runner calls for the
    whole project, `show`, `list`) skip the check: they must not fail because another pipeline's
    target does not exist yet. Every other command (run, build, retry, ...) is checked. -#}
{% macro require_partitioned_target(relation=this) %}
  {%- if execute and flags.WHICH not in ('compile', 'generate', 'show', 'list', 'ls', 'parse') -%}
    {%- set sql -%}
      select c.relkind::text
      from pg_catalog.pg_class c
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where n.nspname = '{{ relation.schema }}' and c.relname = '{{ relation.identifier }}'
    {%- endset -%}
    {%- set rows = run_query(sql).rows -%}
    {%- if rows | length == 0 -%}
      {{ exceptions.raise_compiler_error(
          "target " ~ relation ~ " does not exist: it must be created, partitioned, before dbt runs "
          ~ "(the partitioner does that); refusing to let dbt create it unpartitioned") }}
    {%- elif rows[0][0] != 'p' -%}
      {{ exceptions.raise_compiler_error(
          "target " ~ relation ~ " exists but is not a partitioned table (relkind '" ~ rows[0][0]
          ~ "'); it must be created partitioned (the partitioner does that)") }}
    {%- endif -%}
  {%- endif -%}
{% endmacro %}
