# Policies on sluice's Terraform, evaluated on the parsed configuration (deploy/check turns
# every block into JSON: literals as values, anything else as {"expr": "<source>"}). A setting
# that matters for security must be a literal in the module, so the policy can see it.
# Each violation is {"rule": <id>, "msg": <text naming file:line>}.
package sluice.terraform

import rego.v1

where(b) := sprintf("%s:%d %s.%s", [b.file, b.line, b.type, b.name]) if {
	b.type != ""
} else := trim_space(sprintf("%s:%d %s %s", [b.file, b.line, b.kind, object.get(b, "name", "")]))

violation(rule, b, text) := {"rule": rule, "msg": sprintf("%s: %s", [where(b), text])}

buckets contains b if {
	some b in input.resource
	b.type == "aws_s3_bucket"
}

# A resource r in the same module whose `bucket` argument refers to bucket b.
for_bucket(r, b) if {
	r.module == b.module
	r.config.bucket.expr in {sprintf("aws_s3_bucket.%s.id", [b.name]), sprintf("aws_s3_bucket.%s.bucket", [b.name])}
}

resources_of(type) := [r | some r in input.resource; r.type == type]

# --- public bucket ---------------------------------------------------------------------------

public_access_blocked(b) if {
	some p in resources_of("aws_s3_bucket_public_access_block")
	for_bucket(p, b)
	p.config.block_public_acls == true
	p.config.block_public_policy == true
	p.config.ignore_public_acls == true
	p.config.restrict_public_buckets == true
}

deny contains v if {
	some b in buckets
	not public_access_blocked(b)
	v := violation("s3_public_access", b, "bucket without a public access block setting all four of block_public_acls, block_public_policy, ignore_public_acls, restrict_public_buckets")
}

public_acls := {"public-read", "public-read-write", "authenticated-read"}

deny contains v if {
	some r in input.resource
	r.type in {"aws_s3_bucket", "aws_s3_bucket_acl"}
	r.config.acl in public_acls
	v := violation("s3_public_access", r, sprintf("public ACL %q", [r.config.acl]))
}

# --- encryption and lifecycle of the landing bucket -------------------------------------------

deny contains v if {
	some b in buckets
	not encrypted(b)
	v := violation("s3_encryption", b, "bucket without default encryption (aws_s3_bucket_server_side_encryption_configuration)")
}

encrypted(b) if {
	some e in resources_of("aws_s3_bucket_server_side_encryption_configuration")
	for_bucket(e, b)
	some rule in e.config.rule
	some d in rule.apply_server_side_encryption_by_default
	d.sse_algorithm in {"aws:kms", "aws:kms:dsse", "AES256"}
}

deny contains v if {
	some b in buckets
	not raw_expires(b)
	v := violation("s3_raw_lifecycle", b, "bucket without an enabled lifecycle rule expiring raw/")
}

raw_expires(b) if {
	some l in resources_of("aws_s3_bucket_lifecycle_configuration")
	for_bucket(l, b)
	some rule in l.config.rule
	rule.status == "Enabled"
	some f in rule.filter
	f.prefix == "raw/"
	some e in rule.expiration
	e.days
}

# --- database ---------------------------------------------------------------------------------

databases contains d if {
	some d in input.resource
	d.type in {"aws_db_instance", "aws_rds_cluster"}
}

deny contains v if {
	some d in databases
	d.config.storage_encrypted != true
	v := violation("db_encrypted", d, "storage_encrypted must be true")
}

deny contains v if {
	some d in databases
	not "storage_encrypted" in object.keys(d.config)
	v := violation("db_encrypted", d, "storage_encrypted must be true")
}

deny contains v if {
	some d in databases
	object.get(d.config, "publicly_accessible", true) != false
	v := violation("db_not_public", d, "publicly_accessible must be set to false")
}

deny contains v if {
	some d in databases
	some k in {"password", "master_password"}
	k in object.keys(d.config)
	v := violation("db_managed_password", d, "the master password must not pass through Terraform: drop password, set manage_master_user_password = true (RDS keeps it in Secrets Manager)")
}

deny contains v if {
	some d in databases
	object.get(d.config, "manage_master_user_password", false) != true
	v := violation("db_managed_password", d, "manage_master_user_password must be true")
}

deny contains v if {
	some d in databases
	is_string(d.config.engine_version)
	to_number(split(d.config.engine_version, ".")[0]) < 16
	v := violation("db_engine_version", d, sprintf("PostgreSQL %v is older than 16", [d.config.engine_version]))
}

# --- version constraints ------------------------------------------------------------------------

deny contains v if {
	some t in input.terraform
	not t.config.required_version
	v := violation("version_constraint", t, "terraform block without required_version")
}

deny contains v if {
	some t in input.terraform
	some rp in t.config.required_providers
	some name, p in rp
	name != "__labels"
	not p.version
	v := violation("version_constraint", t, sprintf("provider %q without a version constraint", [name]))
}

deny contains {"rule": "version_constraint", "msg": sprintf("%s: no terraform block with required_version and required_providers", [m])} if {
	some m in {r.module | some r in input.resource}
	m == "."
	count([t | some t in input.terraform; t.module == "."]) == 0
}

deny contains v if {
	some m in input.module
	is_string(m.config.source)
	not startswith(m.config.source, "./")
	not startswith(m.config.source, "../")
	not m.config.version
	v := violation("version_constraint", m, sprintf("module source %v without a version", [m.config.source]))
}

# --- instance metadata --------------------------------------------------------------------------

deny contains v if {
	some r in input.resource
	r.type in {"aws_instance", "aws_launch_template"}
	not imds_v2(r)
	v := violation("imdsv2", r, "instance metadata must require tokens (metadata_options { http_tokens = \"required\" }): IMDSv1 hands credentials to any SSRF")
}

imds_v2(r) if {
	some m in r.config.metadata_options
	m.http_tokens == "required"
}

# --- IAM ----------------------------------------------------------------------------------------

deny contains v if {
	some d in input.data
	d.type == "aws_iam_policy_document"
	some s in d.config.statement
	object.get(s, "effect", "Allow") == "Allow"
	some a in s.actions
	wildcard(a)
	v := violation("iam_wildcard_action", d, sprintf("statement allows action %q: name each action", [a]))
}

deny contains v if {
	some d in input.data
	d.type == "aws_iam_policy_document"
	some s in d.config.statement
	s.not_actions
	v := violation("iam_wildcard_action", d, "statement uses not_actions (allows everything else)")
}

wildcard(a) if a == "*"

wildcard(a) if endswith(a, ":*")

deny contains v if {
	some r in input.resource
	r.type in {"aws_iam_role_policy", "aws_iam_policy", "aws_iam_user_policy", "aws_iam_group_policy"}
	not startswith(object.get(r.config.policy, "expr", ""), "data.aws_iam_policy_document.")
	v := violation("iam_wildcard_action", r, "policy must come from a data.aws_iam_policy_document so its actions can be checked")
}

# --- secrets in variables -----------------------------------------------------------------------

secret_name(n) if regex.match(`(?i)(password|passwd|secret|token|api_key|private_key|_auth$|^auth$)`, n)

deny contains v if {
	some variable in input.variable
	secret_name(variable.name)
	object.get(variable.config, "sensitive", false) != true
	v := violation("sensitive_variable", variable, "variable holding a secret must be sensitive = true")
}

# --- secrets in instance user data --------------------------------------------------------------

# The seed's EC2 host got the database password through user_data, which anyone with
# ec2:DescribeInstanceAttribute (and the instance itself, over IMDS) can read.
deny contains v if {
	some r in input.resource
	r.type in {"aws_instance", "aws_launch_template"}
	some k in {"user_data", "user_data_base64"}
	regex.match(`(?i)(password|secret|token)`, json.marshal(object.get(r.config, k, "")))
	v := violation("no_secret_in_user_data", r, sprintf("%s passes a secret: an instance reads its secrets from Secrets Manager at boot, never from user data", [k]))
}

# --- least-privilege S3 -------------------------------------------------------------------------

# Object actions name a prefix of the bucket (raw/, docs/, ...), never every object in it.
deny contains v if {
	some d in input.data
	d.type == "aws_iam_policy_document"
	some s in d.config.statement
	object.get(s, "effect", "Allow") == "Allow"
	some a in s.actions
	startswith(a, "s3:")
	endswith(a, "Object")
	whole_bucket(s.resources)
	v := violation("iam_s3_prefix", d, sprintf("%s on every object of a bucket: name the prefix the service works under", [a]))
}

# resources is a literal list, or {"expr": source} when it interpolates a bucket ARN.
whole_bucket(resources) if {
	some r in resources
	regex.match(`^arn:aws[a-z-]*:s3:::[^/]+/\*$`, r)
}

whole_bucket(resources) if regex.match(`(\}|:::[^/"]+)/\*"`, resources.expr)
