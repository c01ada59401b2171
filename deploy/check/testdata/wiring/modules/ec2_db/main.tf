variable "ami_id" {
  type        = string
  description = "AMI."
}

variable "db_name" {
  type        = string
  description = "Database name."
}

variable "db_password" {
  type        = string
  description = "Password."
  sensitive   = true
}

resource "aws_instance" "postgres" {
  ami = var.ami_id
}

output "private_ip" {
  value = aws_instance.postgres.private_ip
}
