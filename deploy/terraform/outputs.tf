output "bucket_name" {
  description = "Landing bucket (s3.bucket in sluice.yaml)."
  value       = module.s3.bucket_name
}

output "db_endpoint" {
  description = "PostgreSQL host name (private; reachable from the cluster's security groups only)."
  value       = module.postgres.endpoint
}

output "db_port" {
  description = "PostgreSQL port."
  value       = module.postgres.port
}

output "db_master_secret_arn" {
  description = "Secrets Manager secret holding the master password (managed and rotated by RDS)."
  value       = module.postgres.master_user_secret_arn
}

output "alert_topic_arn" {
  description = "SNS topic for alerts.sns.topic_arn in sluice.yaml."
  value       = module.alerting.topic_arn
}

output "grafana_datasource_uid" {
  description = "UID of the Prometheus datasource the dashboard uses."
  value       = module.metrics.datasource_uid
}

output "service_role_arns" {
  description = "IAM role per service, for the eks.amazonaws.com/role-arn annotation of its service account."
  value       = module.iam.role_arns
}
