{{ sluice_upsert('orders') }}
