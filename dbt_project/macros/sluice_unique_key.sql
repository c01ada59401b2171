{#- Generic test: the pipeline's key (one column or several) is unique across the whole target,
    which PostgreSQL cannot enforce on a table partitioned by another column. During a run it
    checks the keys of the run's slice (each looked up through the key index, see
    sluice_tests.sql); `sluice audit` checks every key. -#}
{% test sluice_unique_key(model, pipeline) %}
  {%- set spec = sluice_spec(pipeline) -%}
  {%- set rel = sluice_test_relation(model) -%}
  {%- if spec is none or rel is none %}
select 1 where false
  {%- else %}
{{ sluice_duplicate_keys(rel, spec, sluice_scoped()) }}
  {%- endif %}
{% endtest %}
