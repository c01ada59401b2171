// Package testkit is what sluice's tests start and share, all real: an embedded NATS server with
// JetStream (NATS, NATSAt, NATSFromConfig, Connect), a fresh database and bucket on the
// PostgreSQL and S3 servers `make test` starts and dbt in the project virtualenv (Postgres, S3,
// DBT, RepoRoot), a Slack API that records posts (Slack), an SMTP server that records mail
// (SMTP), and one way to wait for a condition (Eventually).
package testkit
