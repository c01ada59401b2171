{#- The run's execution date. The Go runner validates it before calling dbt; this re-checks so a
    hand-typed --vars can never put anything but a date into the SQL. -#}
{% macro sluice_ds() -%}
  {%- set ds = var('ds') | string -%}
  {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', ds) -%}
    {{ exceptions.raise_compiler_error("var ds must be a YYYY-MM-DD date, got '" ~ ds ~ "'") }}
  {%- endif -%}
  {{- return(ds) -}}
{%- endmacro %}
