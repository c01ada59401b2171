# Bad fixture for rule sensitive_variable: The seed's db_password variable, not sensitive.
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
}
