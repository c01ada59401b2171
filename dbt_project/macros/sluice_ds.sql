{#- The run's own values: ds, run_id, pipeline and fence. The dbt-runner's warm worker keeps the
    project parsed across runs, and dbt re-parses everything when --vars change, so these do not
    come from --vars there: the runner sets them as environment variables (SLUICE_DS,
    SLUICE_RUN_ID, SLUICE_PIPELINE, SLUICE_FENCE) and this macro reads them only while executing
    (`execute`), so parsing never records them and partial parsing stays partial. A hand-run dbt
    may pass them as --vars instead (dbt_project/README.md). While parsing it returns default. -#}
{% macro sluice_run_var(name, default=none) -%}
  {%- if not execute -%}
    {{- return(default) -}}
  {%- endif -%}
  {%- set value = env_var('SLUICE_' ~ (name | upper), '') -%}
  {%- if value == '' -%}
    {%- set value = var(name, default) -%}
  {%- endif -%}
  {{- return(value) -}}
{%- endmacro %}

{#- The run's execution date. The Go runner validates it before calling dbt; this re-checks so a
    hand-typed value can never put anything but a date into the SQL. While parsing (when no run
    is known) it is a placeholder date. -#}
{% macro sluice_ds() -%}
  {%- if not execute -%}
    {{- return('1970-01-01') -}}
  {%- endif -%}
  {%- set ds = sluice_run_var('ds') | string -%}
  {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', ds) -%}
    {{ exceptions.raise_compiler_error("the run's ds (env SLUICE_DS or var ds) must be a YYYY-MM-DD date, got '" ~ ds ~ "'") }}
  {%- endif -%}
  {{- return(ds) -}}
{%- endmacro %}
