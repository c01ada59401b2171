# Bad fixture for rule no_secret_in_user_data: the seed's EC2 host, its password in user data.
terraform {
  required_version = ">= 1.10.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }
}

variable "db_password" {
  type        = string
  description = "Master password."
  sensitive   = true
}

resource "aws_instance" "postgres" {
  ami           = "ami-0123456789abcdef0"
  instance_type = "t3.medium"

  metadata_options {
    http_tokens = "required"
  }

  user_data = templatefile("${path.module}/init-postgres.sh.tpl", {
    db_password = var.db_password
  })
}
