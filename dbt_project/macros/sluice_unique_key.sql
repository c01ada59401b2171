{#- Generic test: the pipeline's key (one column or several) is unique across the whole target,
    which PostgreSQL cannot enforce on a table partitioned by another column. -#}
{% test sluice_unique_key(model, pipeline) %}
  {%- set spec = sluice_spec(pipeline) -%}
  {%- if spec is none %}
select 1 where false
  {%- else %}
select {{ spec['key'] | join(', ') }}, count(*) as n
from {{ model }}
group by {{ spec['key'] | join(', ') }}
having count(*) > 1
  {%- endif %}
{% endtest %}
