module "s3" {
  source              = "./modules/s3"
  bucket_name         = var.bucket_name
  raw_expiration_days = var.raw_expiration_days
}

module "postgres" {
  source                    = "./modules/postgres"
  identifier                = "sluice-${var.environment}"
  vpc_id                    = var.vpc_id
  subnet_ids                = var.private_subnet_ids
  client_security_group_ids = var.db_client_security_group_ids
  engine_version            = var.db_engine_version
  instance_class            = var.db_instance_class
  allocated_storage_gb      = var.db_allocated_storage_gb
  multi_az                  = var.db_multi_az
  db_name                   = var.db_name
  master_username           = var.db_master_username
}

module "alerting" {
  source     = "./modules/alerting"
  topic_name = "sluice-${var.environment}-alerts"
  ops_email  = var.ops_email
  lambda_arn = var.alert_lambda_arn
}

module "metrics" {
  source         = "./modules/metrics"
  name           = "sluice-${var.environment}"
  prometheus_url = var.prometheus_url
}

module "iam" {
  source            = "./modules/iam"
  name_prefix       = "sluice-${var.environment}"
  bucket_arn        = module.s3.bucket_arn
  alert_topic_arn   = module.alerting.topic_arn
  oidc_provider_arn = var.oidc_provider_arn
  namespace         = var.k8s_namespace
}
