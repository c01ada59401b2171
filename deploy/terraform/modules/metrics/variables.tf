variable "name" {
  type        = string
  description = "Name of the datasource."
}

variable "prometheus_url" {
  type        = string
  description = "URL Grafana queries Prometheus at."
}
