provider "aws" {
  region = var.aws_region

  default_tags {
    tags = {
      project     = "sluice"
      environment = var.environment
    }
  }
}

provider "grafana" {
  url  = var.grafana_url
  auth = var.grafana_auth
}
