# Bad fixture for rule iam_wildcard_action: A role policy allowing s3:*.
terraform {
  required_version = ">= 1.10.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }
}

data "aws_iam_policy_document" "fetcher" {
  statement {
    actions   = ["s3:*"]
    resources = ["arn:aws:s3:::fixture-landing/*"]
  }
}
