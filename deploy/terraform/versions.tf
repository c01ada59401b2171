terraform {
  # 1.10 brings S3 state locking without DynamoDB (use_lockfile).
  required_version = ">= 1.10.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
    grafana = {
      source  = "grafana/grafana"
      version = "~> 3.22"
    }
  }

  # State lives in S3 (partial configuration: bucket, key and region are given to
  # `terraform init -backend-config=...`, see deploy/README.md). To use HCP Terraform
  # instead, replace this block with the one in cloud.tf.example.
  backend "s3" {
    use_lockfile = true
    encrypt      = true
  }
}
