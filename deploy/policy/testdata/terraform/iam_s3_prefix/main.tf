# Bad fixture for rule iam_s3_prefix: the fetcher may write any object of the bucket.
terraform {
  required_version = ">= 1.10.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }
}

variable "bucket_arn" {
  type        = string
  description = "Landing bucket."
}

data "aws_iam_policy_document" "fetcher" {
  statement {
    actions   = ["s3:PutObject"]
    resources = ["${var.bucket_arn}/*"]
  }
}
