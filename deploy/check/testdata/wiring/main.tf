# The seed's root module, reduced to its wiring bugs (deploy/check's wiring test must find each).
terraform {
  required_version = ">= 1.10.0"
}

module "ec2_db" {
  source      = "./modules/ec2_db"
  ami_id      = "ami-0123456789abcdef0"
  key_pair    = "ops"
  db_password = var.db_pasword
}

variable "db_password" {
  type        = string
  description = "Master password."
  sensitive   = true
}

output "db_instance_public_ip" {
  value = module.ec2_db.aws_instance.postgres.public_ip
}
