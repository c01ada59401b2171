variable "identifier" {
  type        = string
  description = "Name of the instance, its subnet group, parameter group and security group."
}

variable "vpc_id" {
  type        = string
  description = "VPC of the security group."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets of the subnet group."
}

variable "client_security_group_ids" {
  type        = list(string)
  description = "Security groups allowed to connect on 5432."
}

variable "engine_version" {
  type        = string
  description = "PostgreSQL version, 16 or later."
}

variable "instance_class" {
  type        = string
  description = "RDS instance class."
}

variable "allocated_storage_gb" {
  type        = number
  description = "Initial storage in GiB."
}

variable "multi_az" {
  type        = bool
  description = "Run a standby in a second availability zone."
}

variable "db_name" {
  type        = string
  description = "Database created on the instance."
}

variable "master_username" {
  type        = string
  description = "Master user name (its password is managed by RDS in Secrets Manager)."
}
