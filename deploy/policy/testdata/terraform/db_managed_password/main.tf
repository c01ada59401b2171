# Bad fixture for rule db_managed_password: The seed's password passed through Terraform.
terraform {
  required_version = ">= 1.10.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }
}

resource "aws_db_instance" "warehouse" {
  identifier          = "fixture"
  engine              = "postgres"
  engine_version      = "16.4"
  instance_class      = "db.t4g.medium"
  allocated_storage   = 20
  storage_encrypted   = true
  publicly_accessible = false
  username            = "sluice_admin"
  password            = var.db_password
}

variable "db_password" {
  type        = string
  description = "Master password."
  sensitive   = true
}
