package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-etl/sluice/pkg/config"
)

const good = `nats:
  subject_prefix: etl
postgres:
  url: env:DATABASE_URL
s3:
  bucket: landing
  access_key: env:S3_KEY
  secret_key: file:%s
alerts:
  slack:
    token: env:SLACK_TOKEN
    channel: "#alerts"
pipelines:
  - name: orders
    source:
      url: http://api.local/data/{ds}.csv
`

func write(t *testing.T, text string) string {
	t.Helper()
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "s3-secret")
	if err := os.WriteFile(secretFile, []byte("s3cr3t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(text, "%s", secretFile, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

var secrets = map[string]string{"DATABASE_URL": "postgres://u:pw@db/x", "S3_KEY": "AKIA", "SLACK_TOKEN": "xoxb-1"}

func TestLoadAppliesDefaultsAndResolvesReferences(t *testing.T) {
	cfg, err := config.Load(write(t, good), env(secrets))
	if err != nil {
		t.Fatal(err)
	}
	p, ok := cfg.Pipeline("orders")
	if !ok {
		t.Fatal("no orders pipeline")
	}
	if p.Sensor.PokeInterval != time.Minute || p.Sensor.Timeout != time.Hour || p.Retries.MaxRetries() != 3 ||
		p.Retries.Delay != 10*time.Minute || p.Lease.OnBusy != "queue" || p.Target.Table != "orders" ||
		p.StagingTable != "staging_orders" || p.Landing.Key != "raw/{pipeline}/{ds}.csv" || cfg.DBT.WorkMem != "256MB" {
		t.Fatalf("defaults not applied: %+v", p)
	}
	if got := fmt.Sprint(p.Alerts); got != "[slack]" {
		t.Fatalf("alerts default = %q, want the configured channels", got)
	}
	if cfg.S3.SecretKey.Reveal() != "s3cr3t" || cfg.Postgres.URL.Reveal() != secrets["DATABASE_URL"] {
		t.Fatal("references not resolved")
	}
	if s := cfg.Postgres.URL.String(); s != "env:DATABASE_URL" {
		t.Fatalf("String() leaks the value: %q", s)
	}
}

func TestBadConfigFailsWithFileAndLine(t *testing.T) {
	cases := []struct {
		name, old, new, want string
	}{
		{"unknown key", "    source:\n", "    sourse:\n", ":15: field sourse not found"},
		{"bad duration", "{ds}.csv\n", "{ds}.csv\n    sensor:\n      poke_interval: soon\n", ":18: cannot unmarshal"},
		{"literal secret", "  url: env:DATABASE_URL\n", "  url: postgres://u:pw@db/x\n", ":4: postgres.url: holds a password"},
		{"url without ds", "data/{ds}.csv", "data/today.csv", ":16: pipelines[0].source.url"},
		{"bad pipeline name", "- name: orders", "- name: Orders!", ":14: pipelines[0].name"},
		{"lease shorter than poke", "{ds}.csv\n", "{ds}.csv\n    lease:\n      ttl: 30s\n", ":18: pipelines[0].lease.ttl: 30s must be longer than the poke interval"},
		{"credentials in the source url", "http://api.local/", "http://user:pw@api.local/", ":16: pipelines[0].source.url: holds credentials"},
		{"literal source header", "{ds}.csv\n", "{ds}.csv\n      headers:\n        Authorization: Bearer xyz\n", ":18: pipelines[0].source.headers.Authorization: "},
		{"bad work_mem", "pipelines:\n", "dbt:\n  work_mem: lots\npipelines:\n", ":14: dbt.work_mem: \"lots\" is not a size"},
		{"unconfigured channel", "{ds}.csv\n", "{ds}.csv\n    alerts: [email]\n", ":17: pipelines[0].alerts: channel \"email\""},
		{"unknown dbt mode", "pipelines:\n", "dbt:\n  mode: warm\npipelines:\n", "dbt.mode: must be worker or subprocess, got \"warm\""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text := strings.Replace(good, c.old, c.new, 1)
			if text == good {
				t.Fatalf("edit %q did not apply", c.old)
			}
			path := write(t, text)
			_, err := config.Load(path, env(secrets))
			if err == nil {
				t.Fatal("bad config loaded")
			}
			if !strings.HasPrefix(err.Error(), path+":") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want %s%s", err, path, c.want)
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("error leaks a secret: %q", err)
				}
			}
		})
	}
}

// TestNATSCredentials: NATS credentials are references in their own keys; a URL holding a user
// or password is refused, in the file (with its line) or behind a reference (naming only it).
func TestNATSCredentials(t *testing.T) {
	bad := []struct{ name, nats, want string }{
		{"url with credentials", "  url: nats://fetcher:hunter2@nats:4222\n", ":2: nats.url: holds credentials"},
		{"literal password", "  url: nats://nats:4222\n  user: fetcher\n  password: hunter2\n", ":4: nats.password: must be a reference"},
		{"password without user", "  url: nats://nats:4222\n  password: env:NATS_PASSWORD\n", ":3: nats.password: needs nats.user"},
		{"two ways", "  user: fetcher\n  password: env:NATS_PASSWORD\n  creds: file:/run/secrets/fetcher.creds\n", ":2: nats: set one of"},
		{"misspelt key", "  passwd: env:NATS_PASSWORD\n", ":2: field passwd not found"},
		{"cert without key", "  tls:\n    cert: client.pem\n", ":3: nats.tls: needs both cert and key"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			path := write(t, strings.Replace(good, "nats:\n", "nats:\n"+c.nats, 1))
			_, err := config.Load(path, env(secrets))
			if err == nil || !strings.HasPrefix(err.Error(), path+":") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %s%s", err, path, c.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
	t.Run("url reference with credentials", func(t *testing.T) {
		path := write(t, strings.Replace(good, "nats:\n", "nats:\n  url: env:NATS_URL\n", 1))
		vars := map[string]string{"NATS_URL": "nats://fetcher:hunter2@nats:4222"}
		for k, v := range secrets {
			vars[k] = v
		}
		_, err := config.Load(path, env(vars))
		if err == nil || !strings.Contains(err.Error(), "nats.url (env:NATS_URL) holds credentials") || strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("user, password reference, tls", func(t *testing.T) {
		path := write(t, strings.Replace(good, "nats:\n", "nats:\n  url: tls://nats:4222\n  user: env:NATS_USER\n  password: env:NATS_PASSWORD\n  tls:\n    ca: ca.pem\n", 1))
		vars := map[string]string{"NATS_USER": "fetcher", "NATS_PASSWORD": "hunter2"}
		for k, v := range secrets {
			vars[k] = v
		}
		cfg, err := config.Load(path, env(vars))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.NATS.User.Reveal() != "fetcher" || cfg.NATS.Password.Reveal() != "hunter2" || cfg.Path(cfg.NATS.TLS.CA) != filepath.Join(filepath.Dir(path), "ca.pem") {
			t.Errorf("nats settings %+v", cfg.NATS)
		}
		found := false
		for _, s := range cfg.Secrets() {
			found = found || s == "hunter2"
		}
		if !found {
			t.Error("the NATS password is not among the secrets redacted from logs")
		}
	})
}
