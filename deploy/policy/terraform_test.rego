package sluice.terraform_test

import rego.v1

import data.sluice.terraform

res(type, name, config) := {"module": ".", "kind": "resource", "type": type, "name": name, "file": "main.tf", "line": 1, "config": config}

bucket := res("aws_s3_bucket", "b", {"bucket": "x"})

ref := {"expr": "aws_s3_bucket.b.id"}

pab := res("aws_s3_bucket_public_access_block", "b", {"bucket": ref, "block_public_acls": true, "block_public_policy": true, "ignore_public_acls": true, "restrict_public_buckets": true})

sse := res("aws_s3_bucket_server_side_encryption_configuration", "b", {"bucket": ref, "rule": [{"apply_server_side_encryption_by_default": [{"sse_algorithm": "aws:kms"}]}]})

lifecycle(prefix) := res("aws_s3_bucket_lifecycle_configuration", "b", {"bucket": ref, "rule": [{"status": "Enabled", "filter": [{"prefix": prefix}], "expiration": [{"days": 30}]}]})

tf := {"module": ".", "kind": "terraform", "file": "versions.tf", "line": 1, "config": {"required_version": ">= 1.10", "required_providers": [{"aws": {"source": "hashicorp/aws", "version": "~> 5.80"}}]}}

rules(input_doc) := {v.rule | some v in terraform.deny with input as input_doc}

test_private_bucket_passes if {
	count(rules({"terraform": [tf], "resource": [bucket, pab, sse, lifecycle("raw/")]})) == 0
}

test_bucket_without_public_access_block_fires if {
	"s3_public_access" in rules({"terraform": [tf], "resource": [bucket, sse, lifecycle("raw/")]})
}

test_public_block_with_one_setting_false_fires if {
	weak := json.patch(pab, [{"op": "replace", "path": "/config/restrict_public_buckets", "value": false}])
	"s3_public_access" in rules({"terraform": [tf], "resource": [bucket, weak, sse, lifecycle("raw/")]})
}

test_public_block_for_another_bucket_fires if {
	other := json.patch(pab, [{"op": "replace", "path": "/config/bucket", "value": {"expr": "aws_s3_bucket.other.id"}}])
	"s3_public_access" in rules({"terraform": [tf], "resource": [bucket, other, sse, lifecycle("raw/")]})
}

test_lifecycle_on_other_prefix_fires if {
	"s3_raw_lifecycle" in rules({"terraform": [tf], "resource": [bucket, pab, sse, lifecycle("logs/")]})
}

db(config) := res("aws_db_instance", "d", object.union({"storage_encrypted": true, "publicly_accessible": false, "manage_master_user_password": true, "engine_version": "16.4"}, config))

test_good_database_passes if {
	count(rules({"terraform": [tf], "resource": [db({})]})) == 0
}

test_database_encryption_from_a_variable_fires if {
	# Not provably true: the policy wants the literal.
	"db_encrypted" in rules({"terraform": [tf], "resource": [db({"storage_encrypted": {"expr": "var.encrypted"}})]})
}

test_database_without_publicly_accessible_fires if {
	d := json.remove(db({}), ["config/publicly_accessible"])
	"db_not_public" in rules({"terraform": [tf], "resource": [d]})
}

test_database_password_fires if {
	"db_managed_password" in rules({"terraform": [tf], "resource": [db({"password": {"expr": "var.db_password"}})]})
}

test_old_postgres_fires if {
	"db_engine_version" in rules({"terraform": [tf], "resource": [db({"engine_version": "14"})]})
}

test_registry_module_without_version_fires if {
	m := {"module": ".", "kind": "module", "name": "vpc", "file": "main.tf", "line": 1, "config": {"source": "terraform-aws-modules/vpc/aws"}}
	"version_constraint" in rules({"terraform": [tf], "module": [m]})
}

test_local_module_needs_no_version if {
	m := {"module": ".", "kind": "module", "name": "s3", "file": "main.tf", "line": 1, "config": {"source": "./modules/s3"}}
	count(rules({"terraform": [tf], "module": [m]})) == 0
}

test_launch_template_with_optional_tokens_fires if {
	lt := res("aws_launch_template", "t", {"metadata_options": [{"http_tokens": "optional"}]})
	"imdsv2" in rules({"terraform": [tf], "resource": [lt]})
}

test_launch_template_with_required_tokens_passes if {
	lt := res("aws_launch_template", "t", {"metadata_options": [{"http_tokens": "required"}]})
	count(rules({"terraform": [tf], "resource": [lt]})) == 0
}

doc(actions) := {"module": ".", "kind": "data", "type": "aws_iam_policy_document", "name": "p", "file": "iam.tf", "line": 1, "config": {"statement": [{"actions": actions}]}}

test_named_actions_pass if {
	count(rules({"terraform": [tf], "data": [doc(["s3:GetObject", "s3:PutObject"])]})) == 0
}

test_star_action_fires if {
	"iam_wildcard_action" in rules({"terraform": [tf], "data": [doc(["*"])]})
}

test_inline_json_policy_fires if {
	p := res("aws_iam_role_policy", "p", {"policy": {"expr": "jsonencode({Statement = []})"}})
	"iam_wildcard_action" in rules({"terraform": [tf], "resource": [p]})
}

test_secret_variable_must_be_sensitive if {
	v := {"module": ".", "kind": "variable", "name": "grafana_auth", "file": "variables.tf", "line": 1, "config": {"type": {"expr": "string"}}}
	"sensitive_variable" in rules({"terraform": [tf], "variable": [v]})
	ok := json.patch(v, [{"op": "add", "path": "/config/sensitive", "value": true}])
	count(rules({"terraform": [tf], "variable": [ok]})) == 0
}

test_user_data_with_password_fires if {
	i := res("aws_instance", "db", {"metadata_options": [{"http_tokens": "required"}], "user_data": {"expr": "templatefile(\"x\", { db_password = var.db_password })"}})
	"no_secret_in_user_data" in rules({"terraform": [tf], "resource": [i]})
}

test_user_data_without_secret_passes if {
	i := res("aws_instance", "db", {"metadata_options": [{"http_tokens": "required"}], "user_data": "#!/bin/sh\necho hello\n"})
	count(rules({"terraform": [tf], "resource": [i]})) == 0
}

s3doc(resources) := {"module": ".", "kind": "data", "type": "aws_iam_policy_document", "name": "p", "file": "iam.tf", "line": 1, "config": {"statement": [{"actions": ["s3:GetObject"], "resources": resources}]}}

test_object_access_to_a_prefix_passes if {
	count(rules({"terraform": [tf], "data": [s3doc({"expr": "[\"${var.bucket_arn}/raw/*\"]"})]})) == 0
	count(rules({"terraform": [tf], "data": [s3doc(["arn:aws:s3:::landing/docs/*"])]})) == 0
}

test_object_access_to_the_whole_bucket_fires if {
	"iam_s3_prefix" in rules({"terraform": [tf], "data": [s3doc({"expr": "[\"${var.bucket_arn}/*\"]"})]})
	"iam_s3_prefix" in rules({"terraform": [tf], "data": [s3doc(["arn:aws:s3:::landing/*"])]})
}
