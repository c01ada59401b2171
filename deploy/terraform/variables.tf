variable "aws_region" {
  type        = string
  description = "AWS region of every resource, e.g. eu-central-1."

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.aws_region))
    error_message = "aws_region must look like eu-central-1."
  }
}

variable "environment" {
  type        = string
  description = "Environment name, used in resource names and tags."
  default     = "production"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.environment))
    error_message = "environment must be 2-21 lowercase letters, digits or dashes."
  }
}

variable "bucket_name" {
  type        = string
  description = "Name of the landing bucket (raw/, rejects, docs/, archive/)."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3-63 lowercase letters, digits, dots, dashes)."
  }
}

variable "raw_expiration_days" {
  type        = number
  description = "Days after which landed raw/ objects expire (the seed's 30)."
  default     = 30

  validation {
    condition     = var.raw_expiration_days >= 1 && floor(var.raw_expiration_days) == var.raw_expiration_days
    error_message = "raw_expiration_days must be a whole number of days, at least 1."
  }
}

variable "vpc_id" {
  type        = string
  description = "VPC of the Kubernetes cluster and the database."

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must be a VPC id (vpc-...)."
  }
}

variable "private_subnet_ids" {
  type        = list(string)
  description = "Private subnets (at least two availability zones) for the database."

  validation {
    condition     = length(var.private_subnet_ids) >= 2 && alltrue([for s in var.private_subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "private_subnet_ids must list at least two subnet ids (subnet-...)."
  }
}

variable "db_client_security_group_ids" {
  type        = list(string)
  description = "Security groups allowed to reach PostgreSQL on 5432 (the cluster's node or pod security groups)."

  validation {
    condition     = length(var.db_client_security_group_ids) >= 1 && alltrue([for s in var.db_client_security_group_ids : can(regex("^sg-[0-9a-f]+$", s))])
    error_message = "db_client_security_group_ids must list at least one security group id (sg-...)."
  }
}

variable "db_engine_version" {
  type        = string
  description = "PostgreSQL major or major.minor version (16 or later)."
  default     = "16"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?$", var.db_engine_version)) && tonumber(split(".", var.db_engine_version)[0]) >= 16
    error_message = "db_engine_version must be PostgreSQL 16 or later, e.g. 16 or 16.4."
  }
}

variable "db_instance_class" {
  type        = string
  description = "RDS instance class."
  default     = "db.t4g.medium"

  validation {
    condition     = startswith(var.db_instance_class, "db.")
    error_message = "db_instance_class must be an RDS class such as db.t4g.medium."
  }
}

variable "db_allocated_storage_gb" {
  type        = number
  description = "Initial storage in GiB; storage autoscaling may grow it up to four times."
  default     = 50

  validation {
    condition     = var.db_allocated_storage_gb >= 20 && var.db_allocated_storage_gb <= 16384
    error_message = "db_allocated_storage_gb must be between 20 and 16384."
  }
}

variable "db_multi_az" {
  type        = bool
  description = "Run a standby in a second availability zone."
  default     = true
}

variable "db_name" {
  type        = string
  description = "Database created on the instance."
  default     = "sluice"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.db_name))
    error_message = "db_name must be a lowercase identifier."
  }
}

variable "db_master_username" {
  type        = string
  description = "Master user; its password is generated and kept in Secrets Manager by RDS, never in Terraform."
  default     = "sluice_admin"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,15}$", var.db_master_username)) && var.db_master_username != "postgres"
    error_message = "db_master_username must be a lowercase identifier of at most 16 characters, not postgres."
  }
}

variable "ops_email" {
  type        = string
  description = "Address subscribed to the alert topic (it must confirm the subscription)."

  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.ops_email))
    error_message = "ops_email must be an e-mail address."
  }
}

variable "alert_lambda_arn" {
  type        = string
  description = "ARN of an existing Lambda function that routes alerts (subscribed to the topic); empty for none."
  default     = ""

  validation {
    condition     = var.alert_lambda_arn == "" || can(regex("^arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:function:[A-Za-z0-9_-]+$", var.alert_lambda_arn))
    error_message = "alert_lambda_arn must be empty or a Lambda function ARN."
  }
}

variable "grafana_url" {
  type        = string
  description = "Base URL of the Grafana instance the datasource is created in."

  validation {
    condition     = can(regex("^https://", var.grafana_url))
    error_message = "grafana_url must be an https:// URL."
  }
}

variable "grafana_auth" {
  type        = string
  description = "Grafana service account token (set it with TF_VAR_grafana_auth, never in a file)."
  sensitive   = true
}

variable "prometheus_url" {
  type        = string
  description = "URL Grafana queries Prometheus at."

  validation {
    condition     = can(regex("^https?://", var.prometheus_url))
    error_message = "prometheus_url must be an http(s):// URL."
  }
}

variable "oidc_provider_arn" {
  type        = string
  description = "ARN of the cluster's IAM OIDC provider (IAM roles for service accounts)."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/.+$", var.oidc_provider_arn))
    error_message = "oidc_provider_arn must be an IAM OIDC provider ARN."
  }
}

variable "k8s_namespace" {
  type        = string
  description = "Namespace the sluice services run in (their service accounts assume the roles)."
  default     = "sluice"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.k8s_namespace))
    error_message = "k8s_namespace must be a DNS label."
  }
}
