# Bad fixture for rule imdsv2: The seed's EC2 host, IMDSv1 allowed.
terraform {
  required_version = ">= 1.10.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
  }
}

resource "aws_instance" "postgres" {
  ami           = "ami-0123456789abcdef0"
  instance_type = "t3.medium"
}
