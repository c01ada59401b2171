{#- What the dbt-runner tells dbt about each pipeline, from its data contract: the runner passes
    var sluice_pipelines = {<pipeline>: {key: [...], version: <column or null>, partition:
    <column>, columns: [...], staging_table: <table>}} on every invocation. A hand-run dbt passes
    it the same way (dbt_project/README.md). -#}
{% macro sluice_spec(pipeline) -%}
  {%- if not modules.re.fullmatch('[a-z][a-z0-9_]{0,62}', pipeline | string) -%}
    {{ exceptions.raise_compiler_error("sluice: pipeline name '" ~ pipeline ~ "' is not a plain name") }}
  {%- endif -%}
  {%- set spec = var('sluice_pipelines', {}).get(pipeline) -%}
  {%- if spec is none and execute and flags.WHICH not in ('compile', 'generate', 'show', 'list', 'ls', 'parse') -%}
    {{ exceptions.raise_compiler_error(
        "sluice: no contract for pipeline " ~ pipeline ~ " in var sluice_pipelines; the dbt-runner "
        ~ "passes it from the pipeline's contract (is the pipeline in the config?)") }}
  {%- endif -%}
  {%- if spec is not none -%}
    {%- for name in spec['key'] + spec['columns'] + [spec['partition']] + ([spec['version']] if spec['version'] else []) -%}
      {%- if not modules.re.fullmatch('[a-z_][a-z0-9_]{0,62}', name | string) -%}
        {{ exceptions.raise_compiler_error("sluice: column '" ~ name ~ "' of pipeline " ~ pipeline ~ " is not a plain identifier") }}
      {%- endif -%}
    {%- endfor -%}
  {%- endif -%}
  {{- return(spec) -}}
{%- endmacro %}
