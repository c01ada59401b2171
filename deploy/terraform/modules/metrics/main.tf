# The Prometheus datasource the sluice dashboard (deploy/grafana/dashboards/sluice.json) reads.
resource "grafana_data_source" "prometheus" {
  name = var.name
  type = "prometheus"
  url  = var.prometheus_url

  json_data_encoded = jsonencode({
    httpMethod   = "POST"
    timeInterval = "15s"
  })
}
