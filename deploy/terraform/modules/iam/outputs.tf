output "role_arns" {
  description = "Role ARN per service."
  value       = { for s, r in aws_iam_role.service : s => r.arn }
}
