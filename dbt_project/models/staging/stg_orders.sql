{{ sluice_staged('orders') }}
