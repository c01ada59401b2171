variable "topic_name" {
  type        = string
  description = "Name of the SNS topic."
}

variable "ops_email" {
  type        = string
  description = "E-mail address subscribed to the topic."
}

variable "lambda_arn" {
  type        = string
  description = "Lambda function subscribed to the topic; empty for none."
}
