{{ sluice_upsert('events') }}
