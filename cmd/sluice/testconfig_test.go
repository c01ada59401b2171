package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

// testConfig is the sluice.yaml of an integration test: the sections every test shares, each
// connection a reference that testSecrets (and the test's own additions) resolve, followed by
// the test's own text (its pipelines, and any section it adds). The zero value is a config
// whose broker is env:NATS_URL, whose PostgreSQL is env:PG_URL and whose S3 is unused.
type testConfig struct {
	natsListen string // sluice's own embedded broker listens here (`sluice run`, `sluice up`)
	natsDir    string // ... and stores there
	natsAuth   bool   // the broker's user and password are env:NATS_USER and env:NATS_PASSWORD
	noNATS     bool   // no nats section: the test passes the broker's URL on the command line
	bucket     string // the test's bucket on the S3 server (testkit.S3); empty leaves S3 unused
	dbt        bool   // dbt from the project virtualenv, 2 threads, on the repository's dbt_project
	dbtProject string // ... on this project directory instead
	alerts     string // lines of the alerts section ahead of its channels (run_url, trace_url)
	slack      string // Slack's API URL (a testkit.Slack server); the token is env:SLACK_TOKEN
	smtp       *testkit.SMTPServer
	smtpAuth   bool   // the mail server's user is sluice, its password env:SMTP_PASSWORD
	rest       string // the test's own sections, pipelines last
}

// text renders the config.
func (c testConfig) text(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	switch {
	case c.noNATS:
	case c.natsListen != "":
		fmt.Fprintf(&b, "nats:\n  listen: %s\n", c.natsListen)
		if c.natsDir != "" {
			fmt.Fprintf(&b, "  data_dir: %s\n", c.natsDir)
		}
	default:
		b.WriteString("nats:\n  url: env:NATS_URL\n")
		if c.natsAuth {
			b.WriteString("  user: env:NATS_USER\n  password: env:NATS_PASSWORD\n")
		}
	}
	b.WriteString("postgres:\n  url: env:PG_URL\n")
	if c.bucket == "" {
		b.WriteString("s3:\n  bucket: unused\n")
	} else {
		fmt.Fprintf(&b, "s3:\n  endpoint: env:S3_ENDPOINT\n  bucket: %s\n  access_key: env:S3_ACCESS_KEY\n"+
			"  secret_key: env:S3_SECRET_KEY\n  path_style: true\n", c.bucket)
	}
	if c.dbt {
		project := c.dbtProject
		if project == "" {
			project = filepath.Join(testkit.RepoRoot(t), "dbt_project")
		}
		fmt.Fprintf(&b, "dbt:\n  executable: %s\n  project_dir: %s\n  threads: 2\n", testkit.DBT(t), project)
	}
	if c.alerts != "" || c.slack != "" || c.smtp != nil {
		b.WriteString("alerts:\n" + c.alerts)
	}
	if c.slack != "" {
		fmt.Fprintf(&b, "  slack:\n    token: env:SLACK_TOKEN\n    channel: \"#data-alerts\"\n    api_url: %s\n", c.slack)
	}
	if c.smtp != nil {
		host, port := c.smtp.Addr()
		fmt.Fprintf(&b, "  email:\n    host: %s\n    port: %d\n", host, port)
		if c.smtpAuth {
			b.WriteString("    username: sluice\n    password: env:SMTP_PASSWORD\n")
		}
		b.WriteString("    tls: none\n    from: sluice@localhost\n    to: [data-ops@localhost]\n")
	}
	b.WriteString(c.rest)
	return b.String()
}

// write renders the config into a temporary directory of the test and returns its path.
func (c testConfig) write(t testing.TB) string {
	t.Helper()
	return c.writeIn(t, t.TempDir())
}

// writeIn renders the config as dir/sluice.yaml (relative paths in it are relative to dir).
func (c testConfig) writeIn(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "sluice.yaml")
	writeFile(t, path, c.text(t))
	return path
}

// writeFile writes text at path, readable by the test's user only (as a config with secrets).
func writeFile(t testing.TB, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// testSecrets are the values of the references a testConfig makes to the broker at natsURL, the
// database pg and the S3 server of s3cfg; a test adds its own (SLACK_TOKEN, NATS_USER, ...).
func testSecrets(natsURL, pg string, s3cfg config.S3) map[string]string {
	return map[string]string{
		"NATS_URL": natsURL, "PG_URL": pg, "S3_ENDPOINT": s3cfg.Endpoint.Reveal(),
		"S3_ACCESS_KEY": s3cfg.AccessKey.Reveal(), "S3_SECRET_KEY": s3cfg.SecretKey.Reveal(),
	}
}

// loadConfig loads the config at path with its references resolved from secrets.
func loadConfig(t testing.TB, path string, secrets map[string]string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path, func(k string) (string, bool) { v, ok := secrets[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// setenv puts secrets into the test's environment, for the commands that read them there.
func setenv(t *testing.T, secrets map[string]string) {
	for k, v := range secrets {
		t.Setenv(k, v)
	}
}
