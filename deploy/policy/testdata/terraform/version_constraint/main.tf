# Bad fixture for rule version_constraint: A provider without a version constraint.
terraform {
  required_version = ">= 1.10.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
    }
  }
}

resource "aws_sns_topic" "alerts" {
  name = "fixture-alerts"
}
