{{ sluice_staged('events') }}
