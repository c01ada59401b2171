{#- Fencing for the upsert. The sensor's lease carries a fencing token (the KV revision, which only
    grows); every writer records it in sluice_fences inside its own transaction and refuses to
    commit when a greater token is already there (pkg/fence does the same in Go). As a pre-hook
    this runs inside the model's transaction, before the delete+insert, so a run that lost its
    lease cannot upsert, and the row lock it takes serialises it with a newer run.
    The runner passes pipeline, run_id and fence as the run's values (sluice_run_var, in
    sluice_ds.sql). No fence, no write: without a token (or with 0) the model refuses to run; a
    manual run passes one greater than sluice_fences holds. -#}
{% macro sluice_fence_check() %}
  {%- set token = sluice_run_var('fence') -%}
  {%- if execute and (token is none or token | int <= 0) -%}
    {{ exceptions.raise_compiler_error("sluice: no fencing token (SLUICE_FENCE or var fence is missing or 0): no fence, no write") }}
  {%- elif not execute -%}
    select 1 /* parsing */
  {%- else -%}
    {%- set pipeline = sluice_run_var('pipeline') | string -%}
    {%- set run_id = sluice_run_var('run_id') | string -%}
    {%- if not modules.re.fullmatch('[a-z][a-z0-9_]{0,62}', pipeline) or not modules.re.fullmatch('[A-Za-z0-9_-]{1,64}', run_id) -%}
      {{ exceptions.raise_compiler_error("the run's pipeline and run_id must be plain names") }}
    {%- endif -%}
    do $sluice_fence$
    declare
      recorded sluice_fences%rowtype;
    begin
      insert into sluice_fences (pipeline, token, run_id) values ('{{ pipeline }}', {{ token | int }}, '{{ run_id }}')
      on conflict (pipeline) do update
        set token = excluded.token, run_id = excluded.run_id, updated = now()
        where sluice_fences.token <= excluded.token;
      if not found then
        select * into recorded from sluice_fences where pipeline = '{{ pipeline }}';
        raise exception 'fenced: a newer run holds the lease: pipeline {{ pipeline }}: run {{ run_id }} token {{ token | int }} is lower than token % recorded by run % at %. Either that newer run holds the lease, or the broker''s state was reset while PostgreSQL kept sluice_fences; then, once no older run can still write: DELETE FROM sluice_fences WHERE pipeline = ''{{ pipeline }}''',
          recorded.token, recorded.run_id, recorded.updated;
      end if;
    end
    $sluice_fence$
  {%- endif -%}
{% endmacro %}
