package config

import (
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/sluice-etl/sluice/pkg/secret"
)

// NATS says where the broker is and who this process is to it. With URL empty the sluice CLI
// runs an embedded server. Credentials never come from the URL: a URL with a user or password
// is refused.
type NATS struct {
	URL           secret.Value `yaml:"url"`
	Listen        string       `yaml:"listen"`
	DataDir       string       `yaml:"data_dir"`
	SubjectPrefix string       `yaml:"subject_prefix"`
	Stream        string       `yaml:"stream"`
	// User is the NATS user name (literal, or a reference so one file serves every container);
	// Password must be a reference. Creds (a creds file's content) and NKey (a user seed) are
	// references too; at most one way to authenticate is set.
	User     secret.Value `yaml:"user"`
	Password secret.Value `yaml:"password"`
	Creds    secret.Value `yaml:"creds"`
	NKey     secret.Value `yaml:"nkey"`
	TLS      *NATSTLS     `yaml:"tls"`
	// Replicas is how many servers of a cluster store the events stream, the log stream and
	// every KV bucket (1, or 3 on a three-node cluster; docs/reliability.md). Default 1.
	Replicas int `yaml:"replicas"`
}

// NATSTLS configures TLS to NATS (tls:// URLs, or any URL of a server that requires TLS): the
// CA that signed the server's certificate, and a client certificate and key for mutual TLS.
// Paths are relative to the config file.
type NATSTLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

func (n *NATS) applyDefaults() {
	setDefault(&n.Listen, "127.0.0.1:4222")
	setDefault(&n.DataDir, ".sluice/nats")
	setDefault(&n.Replicas, 1)
	setDefault(&n.SubjectPrefix, "etl")
	setDefault(&n.Stream, "SLUICE")
}

// validateNames checks the subject prefix and stream name.
func (n *NATS) validateNames() error {
	if !tokenRe.MatchString(n.SubjectPrefix) {
		return fieldErr("nats.subject_prefix", "%q must be one subject token (letters, digits, _ or -)", n.SubjectPrefix)
	}
	if n.SubjectPrefix == "logs" {
		return fieldErr("nats.subject_prefix", `"logs" is taken by the log stream (logs.<prefix>.>)`)
	}
	if !tokenRe.MatchString(n.Stream) {
		return fieldErr("nats.stream", "%q must be letters, digits, _ or -", n.Stream)
	}
	return nil
}

func (n *NATS) validate() error {
	if urlHasCredentials(n.URL.Literal()) {
		return fieldErr("nats.url", "holds credentials: set nats.user/nats.password, nats.creds or nats.nkey (secret references) instead")
	}
	ways := 0
	for _, v := range []secret.Value{n.Password, n.Creds, n.NKey} {
		if !v.IsZero() {
			ways++
		}
	}
	if ways > 1 {
		return fieldErr("nats", "set one of nats.password (with nats.user), nats.creds or nats.nkey")
	}
	if !n.Password.IsZero() && n.User.IsZero() {
		return fieldErr("nats.password", "needs nats.user")
	}
	if n.TLS != nil && (n.TLS.Cert == "") != (n.TLS.Key == "") {
		return fieldErr("nats.tls", "needs both cert and key for a client certificate, or neither")
	}
	if n.Replicas < 1 || n.Replicas > 5 {
		return fieldErr("nats.replicas", "%d must be between 1 and 5 (3 on a three-node cluster)", n.Replicas)
	}
	return nil
}

// urlHasCredentials reports a user or password in a NATS URL or comma-separated list of them.
func urlHasCredentials(raw string) bool {
	for _, one := range strings.Split(raw, ",") {
		one = strings.TrimSpace(one)
		rest := one
		if i := strings.Index(one, "://"); i >= 0 {
			rest = one[i+3:]
		}
		if j := strings.IndexAny(rest, "/?#"); j >= 0 {
			rest = rest[:j]
		}
		if strings.Contains(rest, "@") {
			return true
		}
	}
	return false
}

// Postgres is the warehouse connection. The URL holds a password, so it must be a reference.
type Postgres struct {
	URL secret.Value `yaml:"url"`
}

func (p *Postgres) validate() error {
	if p.URL.IsZero() {
		return fieldErr("postgres.url", "is required")
	}
	return nil
}

// S3 is the landing bucket.
type S3 struct {
	Endpoint  secret.Value `yaml:"endpoint"`
	Region    string       `yaml:"region"`
	Bucket    string       `yaml:"bucket"`
	AccessKey secret.Value `yaml:"access_key"`
	SecretKey secret.Value `yaml:"secret_key"`
	PathStyle bool         `yaml:"path_style"`
}

func (s *S3) applyDefaults() {
	setDefault(&s.Region, "us-east-1")
}

func (s *S3) validate() error {
	if s.Bucket == "" {
		return fieldErr("s3.bucket", "is required")
	}
	return nil
}

// DBT says how to run dbt.
type DBT struct {
	Executable string `yaml:"executable"`
	ProjectDir string `yaml:"project_dir"`
	Threads    int    `yaml:"threads"`
	// Mode is how the dbt-runner runs dbt: "worker" (the default), one long-lived Python process
	// per replica that keeps dbt imported and the project parsed (services/dbtrunner/worker.py),
	// or "subprocess", a dbt process per command (the fallback).
	Mode   string    `yaml:"mode"`
	Worker DBTWorker `yaml:"worker"`
	// WorkMem is PostgreSQL's work_mem for dbt's sessions, so a large date's de-duplication, key
	// lookup and counts sort and hash in memory instead of spilling at the server's default
	// (4MB). A size: 64MB, 1GB, 512kB.
	WorkMem string `yaml:"work_mem"`
}

// DBTWorker bounds the warm dbt worker: it is replaced by a fresh process after MaxRuns builds,
// or after a build that leaves it above MaxRSSMB of resident memory.
type DBTWorker struct {
	// Python runs the worker; default: the interpreter of dbt.executable (its #! line).
	Python   string `yaml:"python"`
	MaxRuns  int    `yaml:"max_runs"`
	MaxRSSMB int    `yaml:"max_rss_mb"`
}

func (d *DBT) applyDefaults() {
	setDefault(&d.Executable, "dbt")
	setDefault(&d.ProjectDir, "dbt_project")
	setDefault(&d.Threads, 4)
	setDefault(&d.Mode, "worker")
	setDefault(&d.Worker.MaxRuns, 500)
	setDefault(&d.Worker.MaxRSSMB, 1024)
	setDefault(&d.WorkMem, "256MB")
}

// workMemRe is a PostgreSQL memory size dbt's sessions may set work_mem to.
var workMemRe = regexp.MustCompile(`^[1-9][0-9]{0,6}(kB|MB|GB)$`)

func (d *DBT) validate() error {
	if d.Threads < 1 {
		return fieldErr("dbt.threads", "must be at least 1")
	}
	if d.Mode != "worker" && d.Mode != "subprocess" {
		return fieldErr("dbt.mode", "must be worker or subprocess, got %q", d.Mode)
	}
	if d.Worker.MaxRuns < 0 || d.Worker.MaxRSSMB < 0 {
		return fieldErr("dbt.worker", "max_runs and max_rss_mb must not be negative")
	}
	if !workMemRe.MatchString(d.WorkMem) {
		return fieldErr("dbt.work_mem", "%q is not a size like 256MB (kB, MB or GB)", d.WorkMem)
	}
	return nil
}

// Lineage sends OpenLineage run events (START, COMPLETE, FAIL for every run and step, with the
// datasets read and written) to an HTTP endpoint, a file of JSON lines, or both; off when both
// are empty.
type Lineage struct {
	// URL receives each event as a POST (Marquez: http://marquez:5000/api/v1/lineage).
	URL string `yaml:"url"`
	// File gets one JSON event per line, appended.
	File string `yaml:"file"`
	// Namespace is the jobs' OpenLineage namespace; default "sluice".
	Namespace string `yaml:"namespace"`
}

func (l *Lineage) applyDefaults() {
	setDefault(&l.Namespace, "sluice")
}

func (l *Lineage) validate() error {
	if u := l.URL; u != "" && !isHTTP(u) {
		return fieldErr("lineage.url", "%q must be an http(s) URL", u)
	}
	return nil
}

// Console is the web console (services/console) and the log stream it reads.
type Console struct {
	// Addr is where the console listens (`sluice up` and sluice-console); default 127.0.0.1:8090.
	Addr string `yaml:"addr"`
	// URL is the console's address as users reach it (behind a proxy, say); default
	// http://<addr>. alerts.run_url defaults to its run page.
	URL string `yaml:"url"`
	// Password (a reference) lets users log in to act (trigger, rerun, backfill, pause); without
	// it the console is read-only.
	Password secret.Value `yaml:"password"`
	// Logs bounds the stream of runs' log records.
	Logs LogStream `yaml:"logs"`
}

// LogStream limits the log stream: records older than MaxAge, or beyond MaxBytes in all, go.
type LogStream struct {
	MaxAge   time.Duration `yaml:"max_age"`
	MaxBytes int64         `yaml:"max_bytes"`
}

func (c *Console) applyDefaults() {
	setDefault(&c.Addr, "127.0.0.1:8090")
	setDefault(&c.URL, "http://"+c.Addr)
	c.URL = strings.TrimRight(c.URL, "/")
	setDefault(&c.Logs.MaxAge, 7*24*time.Hour)
	setDefault(&c.Logs.MaxBytes, 1<<30)
}

func (c *Console) validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fieldErr("console.addr", "%q is not host:port", c.Addr)
	}
	if !isHTTP(c.URL) {
		return fieldErr("console.url", "%q must be an http(s) URL", c.URL)
	}
	if c.Logs.MaxAge < time.Minute {
		return fieldErr("console.logs.max_age", "%v is shorter than a minute", c.Logs.MaxAge)
	}
	if c.Logs.MaxBytes < 1<<20 {
		return fieldErr("console.logs.max_bytes", "%d is less than 1 MiB", c.Logs.MaxBytes)
	}
	return nil
}

// isHTTP reports an http:// or https:// URL.
func isHTTP(u string) bool {
	return strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")
}
