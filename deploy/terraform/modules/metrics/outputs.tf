output "datasource_uid" {
  description = "UID of the datasource."
  value       = grafana_data_source.prometheus.uid
}
