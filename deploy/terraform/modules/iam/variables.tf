variable "name_prefix" {
  type        = string
  description = "Prefix of the role names."
}

variable "bucket_arn" {
  type        = string
  description = "ARN of the landing bucket."
}

variable "alert_topic_arn" {
  type        = string
  description = "ARN of the SNS alert topic the alerter publishes to."
}

variable "oidc_provider_arn" {
  type        = string
  description = "ARN of the cluster's IAM OIDC provider."
}

variable "namespace" {
  type        = string
  description = "Namespace of the services' service accounts (sluice-<service>)."
}
