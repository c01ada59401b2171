{{ config(materialized='view') }}

-- The run's slice of the staging table.
select
    order_id,
    customer_id,
    amount,
    updated_at,
    load_date
from {{ source('sluice', 'staging_orders') }}
where load_date = cast('{{ sluice_ds() }}' as date)
