# The topic the alerter publishes to (alerts.sns in sluice.yaml), with the operators' e-mail and
# an optional routing Lambda subscribed.
resource "aws_sns_topic" "alerts" {
  name              = var.topic_name
  kms_master_key_id = "alias/aws/sns"
}

resource "aws_sns_topic_subscription" "email" {
  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "email"
  endpoint  = var.ops_email
}

resource "aws_sns_topic_subscription" "lambda" {
  count = var.lambda_arn == "" ? 0 : 1

  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "lambda"
  endpoint  = var.lambda_arn
}

# Without this permission SNS cannot invoke the function and the subscription silently fails.
resource "aws_lambda_permission" "sns" {
  count = var.lambda_arn == "" ? 0 : 1

  statement_id  = "AllowSNSInvoke-${var.topic_name}"
  action        = "lambda:InvokeFunction"
  function_name = var.lambda_arn
  principal     = "sns.amazonaws.com"
  source_arn    = aws_sns_topic.alerts.arn
}
