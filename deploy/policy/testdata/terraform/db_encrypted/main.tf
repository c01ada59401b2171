# Bad fixture for rule db_encrypted: An RDS instance with unencrypted storage.
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
  identifier                  = "fixture"
  engine                      = "postgres"
  engine_version              = "16.4"
  instance_class              = "db.t4g.medium"
  allocated_storage           = 20
  storage_encrypted           = false
  publicly_accessible         = false
  username                    = "sluice_admin"
  manage_master_user_password = true
}
