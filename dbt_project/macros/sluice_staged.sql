{#- The staging model of a pipeline: the run's slice (partition column = var ds) of the staging
    table the validator loads, with the contract's columns. A pipeline's staging model is just
        {{ sluice_staged('events') }}
    and its sources entry names the staging table (source 'sluice'). -#}
{% macro sluice_staged(pipeline) %}
  {{- config(materialized='view') -}}
  {%- set spec = sluice_spec(pipeline) -%}
  {%- if spec is none %}
-- pipeline {{ pipeline }} is not in this run's config: a placeholder so the project compiles
select * from {{ source('sluice', 'staging_' ~ pipeline) }} where false
  {%- else %}
-- The run's slice of {{ spec['staging_table'] }}.
select
  {%- for col in spec['columns'] + [spec['partition']] %}
    {{ col }}{{ "," if not loop.last }}
  {%- endfor %}
from {{ source('sluice', spec['staging_table']) }}
where {{ spec['partition'] }} = cast('{{ sluice_ds() }}' as date)
  {%- endif %}
{% endmacro %}
