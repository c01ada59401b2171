# One role per service, assumed by that service's Kubernetes service account through the
# cluster's OIDC provider (IRSA), each with only the S3 prefixes its step touches:
#   fetcher     writes raw/ (and reads it back: a redelivered event keeps the landed object)
#   validator   reads raw/, writes the quarantined rows next to them (<key>.rejects.csv)
#   partitioner writes archive/ (retention's export of dropped partitions)
#   dbtrunner   writes docs/ (the dbt docs of each run)
#   console     reads docs/
#   alerter     publishes to the alert topic
#   sensor      nothing in AWS (it polls the source over HTTP)
locals {
  services   = toset(["sensor", "fetcher", "validator", "partitioner", "dbtrunner", "alerter", "console"])
  oidc_host  = element(split("oidc-provider/", var.oidc_provider_arn), 1)
  role_names = { for s in local.services : s => "${var.name_prefix}-${s}" }
}

data "aws_iam_policy_document" "assume" {
  for_each = local.services

  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:sub"
      values   = ["system:serviceaccount:${var.namespace}:sluice-${each.key}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "service" {
  for_each = local.services

  name               = local.role_names[each.key]
  assume_role_policy = data.aws_iam_policy_document.assume[each.key].json
}

data "aws_iam_policy_document" "fetcher" {
  statement {
    sid       = "WriteRaw"
    actions   = ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"]
    resources = ["${var.bucket_arn}/raw/*"]
  }

  statement {
    sid       = "ListRaw"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["raw/*"]
    }
  }
}

data "aws_iam_policy_document" "validator" {
  statement {
    sid       = "ReadRaw"
    actions   = ["s3:GetObject"]
    resources = ["${var.bucket_arn}/raw/*"]
  }

  statement {
    sid       = "WriteRejects"
    actions   = ["s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${var.bucket_arn}/raw/*.rejects.csv"]
  }
}

data "aws_iam_policy_document" "partitioner" {
  statement {
    sid       = "WriteArchive"
    actions   = ["s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${var.bucket_arn}/archive/*"]
  }
}

data "aws_iam_policy_document" "dbtrunner" {
  statement {
    sid       = "WriteDocs"
    actions   = ["s3:PutObject", "s3:GetObject"]
    resources = ["${var.bucket_arn}/docs/*"]
  }
}

data "aws_iam_policy_document" "console" {
  statement {
    sid       = "ReadDocs"
    actions   = ["s3:GetObject"]
    resources = ["${var.bucket_arn}/docs/*"]
  }
}

data "aws_iam_policy_document" "alerter" {
  statement {
    sid       = "PublishAlerts"
    actions   = ["sns:Publish"]
    resources = [var.alert_topic_arn]
  }
}

resource "aws_iam_role_policy" "fetcher" {
  name   = "s3-raw"
  role   = aws_iam_role.service["fetcher"].id
  policy = data.aws_iam_policy_document.fetcher.json
}

resource "aws_iam_role_policy" "validator" {
  name   = "s3-raw-read-rejects-write"
  role   = aws_iam_role.service["validator"].id
  policy = data.aws_iam_policy_document.validator.json
}

resource "aws_iam_role_policy" "partitioner" {
  name   = "s3-archive"
  role   = aws_iam_role.service["partitioner"].id
  policy = data.aws_iam_policy_document.partitioner.json
}

resource "aws_iam_role_policy" "dbtrunner" {
  name   = "s3-docs"
  role   = aws_iam_role.service["dbtrunner"].id
  policy = data.aws_iam_policy_document.dbtrunner.json
}

resource "aws_iam_role_policy" "console" {
  name   = "s3-docs-read"
  role   = aws_iam_role.service["console"].id
  policy = data.aws_iam_policy_document.console.json
}

resource "aws_iam_role_policy" "alerter" {
  name   = "sns-publish"
  role   = aws_iam_role.service["alerter"].id
  policy = data.aws_iam_policy_document.alerter.json
}
