# Bad fixture for rule db_not_public: An RDS instance reachable from the internet.
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
  storage_encrypted           = true
  publicly_accessible         = true
  username                    = "sluice_admin"
  manage_master_user_password = true
}
