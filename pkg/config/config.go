// Package config loads sluice's one YAML file: connections and pipelines. Decoding is strict
// (unknown keys fail) and every error names the file and line, as thanos objstore does.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluice-etl/sluice/pkg/schedule"
	"github.com/sluice-etl/sluice/pkg/secret"
)

// Config is the whole file.
type Config struct {
	NATS      NATS       `yaml:"nats"`
	Postgres  Postgres   `yaml:"postgres"`
	S3        S3         `yaml:"s3"`
	DBT       DBT        `yaml:"dbt"`
	Alerts    Alerts     `yaml:"alerts"`
	Lineage   Lineage    `yaml:"lineage"`
	Console   Console    `yaml:"console"`
	Pipelines []Pipeline `yaml:"pipelines"`
	// ConnectTimeout bounds connecting to PostgreSQL, S3 and NATS at start (default 30s): a
	// dependency that accepts connections and never answers fails the start, naming it.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`

	// Dir is the directory of the config file; relative paths in it are resolved against Dir.
	Dir string `yaml:"-"`
}

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

// Postgres is the warehouse connection. The URL holds a password, so it must be a reference.
type Postgres struct {
	URL secret.Value `yaml:"url"`
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

// DBT says how to run dbt.
type DBT struct {
	Executable string `yaml:"executable"`
	ProjectDir string `yaml:"project_dir"`
	Threads    int    `yaml:"threads"`
}

// Alerts configures where failures are reported.
type Alerts struct {
	// RunURL is a link template for a run's page; {pipeline}, {ds} and {run_id} are replaced.
	RunURL string `yaml:"run_url"`
	// TraceURL is a link template for a run's trace (Jaeger, Tempo); {trace_id} is replaced,
	// and {pipeline}, {ds} and {run_id} as in RunURL.
	TraceURL string `yaml:"trace_url"`
	Slack    *Slack `yaml:"slack"`
	Email    *Email `yaml:"email"`
	SNS      *SNS   `yaml:"sns"`
}

// SNS publishes alerts to an AWS SNS topic. Without keys the SDK's default chain is used
// (instance role, IRSA, environment); keys, when given, must be references.
type SNS struct {
	TopicARN string `yaml:"topic_arn"`
	// Region defaults to the topic ARN's.
	Region string `yaml:"region"`
	// Endpoint overrides the SNS endpoint (a VPC endpoint).
	Endpoint  string       `yaml:"endpoint"`
	AccessKey secret.Value `yaml:"access_key"`
	SecretKey secret.Value `yaml:"secret_key"`
}

// Slack posts alerts with a bot token.
type Slack struct {
	Token   secret.Value `yaml:"token"`
	Channel string       `yaml:"channel"`
	// APIURL overrides Slack's API base URL (for a proxy or slack-go's slacktest server).
	APIURL string `yaml:"api_url"`
}

// Email sends alerts over SMTP.
type Email struct {
	Host     string       `yaml:"host"`
	Port     int          `yaml:"port"`
	Username string       `yaml:"username"`
	Password secret.Value `yaml:"password"`
	// TLS is "none", "starttls" (default) or "tls".
	TLS  string   `yaml:"tls"`
	From string   `yaml:"from"`
	To   []string `yaml:"to"`
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

// Pipeline is one declared pipeline.
type Pipeline struct {
	Name string `yaml:"name"`
	// Schedule is when the broker requests runs (docs/scheduling.md): cron with 5 or 6 fields,
	// @hourly, @daily, ..., or @every <duration>. Empty: runs are only triggered or backfilled.
	Schedule string `yaml:"schedule"`
	// Timezone is the IANA zone the cron and the ds dates are read in (default UTC).
	Timezone string `yaml:"timezone"`
	// Catchup requests every interval missed while sluice was down or the pipeline paused,
	// oldest first; without it only the latest interval runs (the seed's catchup=False).
	Catchup bool `yaml:"catchup"`
	// StartDate (YYYY-MM-DD in Timezone): no interval starting before it is requested.
	StartDate    string  `yaml:"start_date"`
	Source       Source  `yaml:"source"`
	Sensor       Sensor  `yaml:"sensor"`
	Lease        Lease   `yaml:"lease"`
	Landing      Landing `yaml:"landing"`
	Contract     string  `yaml:"contract"`
	StagingTable string  `yaml:"staging_table"`
	Target       Target  `yaml:"target"`
	DBT          Select  `yaml:"dbt"`
	Retries      Retries `yaml:"retries"`
	// SLA is the run's deadline (docs/reliability.md); nil: none.
	SLA *SLA `yaml:"sla"`
	// Alerts lists the channels ("slack", "email", "sns") alerts go to; default: all configured.
	Alerts []string `yaml:"alerts"`
	// AlertsFallback lists channels that get an alert when one of Alerts fails for good (Slack's
	// channel_not_found, a rejected login): so a broken primary does not swallow the alert.
	AlertsFallback []string `yaml:"alerts_fallback"`
	// SlackChannel overrides alerts.slack.channel for this pipeline's alerts.
	SlackChannel string `yaml:"slack_channel"`
	// Notices adds success or recovery notices to the failure alerts, on the same channels.
	Notices Notices `yaml:"notices"`
	// MaxBadRows is how many rows may break the contract before the run fails (default 0: any
	// violation fails it); up to that many are quarantined in the rejects file, not loaded.
	MaxBadRows int `yaml:"max_bad_rows"`
	// Retention drops old partitions of the target (docs/data-path.md).
	Retention Retention `yaml:"retention"`
	// Deadlines bound one delivery of a step (keys: the steps of RetrySteps): past it the step
	// is cancelled and retried as a transient failure, so a hung statement or request cannot
	// hold the pipeline forever. Default: 10 × lease.ttl, 30 × for fetcher and dbtrunner.
	Deadlines map[string]time.Duration `yaml:"deadlines"`
}

// StepDeadline is how long one delivery of step may take.
func (p *Pipeline) StepDeadline(step string) time.Duration {
	if d, ok := p.Deadlines[step]; ok {
		return d
	}
	if step == "fetcher" || step == "dbtrunner" {
		return 30 * p.Lease.TTL // large files, dbt builds
	}
	return 10 * p.Lease.TTL
}

// Retention says how long the target keeps a ds partition. Days 0 keeps every partition.
type Retention struct {
	// Days: partitions for dates more than Days before today (UTC) are detached and dropped.
	Days int `yaml:"days"`
	// ExportToS3 writes each partition to ExportKey (gzip CSV) before it is dropped.
	ExportToS3 bool `yaml:"export_to_s3"`
	// ExportKey is the S3 key template ({pipeline}, {ds}: the partition's date).
	ExportKey string `yaml:"export_key"`
}

// Source is where a ds's file comes from. {ds} in URL is replaced by the date.
type Source struct {
	URL    string `yaml:"url"`
	Method string `yaml:"method"`
	// MaxBytes is the largest file the fetcher lands, counted after gzip decoding (default 10 GiB).
	MaxBytes int64 `yaml:"max_bytes"`
	// Headers are sent with every request to the source; values are secret references
	// (Authorization: env:API_TOKEN), so credentials never sit in the URL or the file.
	Headers map[string]secret.Value `yaml:"headers"`
	// RedirectHosts are hosts (or host:port) besides the source's own that a redirect may go
	// to. A redirect never goes from https to http, nor to a loopback, link-local or private
	// address unless the source itself is on one.
	RedirectHosts []string `yaml:"redirect_hosts"`
}

// Sensor is the deferrable wait for the source.
type Sensor struct {
	PokeInterval time.Duration `yaml:"poke_interval"`
	Timeout      time.Duration `yaml:"timeout"`
	// Backoff multiplies the wait after each unanswered poke (1: a fixed interval), up to
	// MaxInterval.
	Backoff     float64       `yaml:"backoff"`
	MaxInterval time.Duration `yaml:"max_interval"`
	// Jitter shortens each wait by a random share of at most Jitter (0 to <1; default 0.1), so
	// runs parked together do not come back together. It never lengthens a wait.
	Jitter *float64 `yaml:"jitter"`
	// SoftFail ends a run that timed out as skipped instead of failed.
	SoftFail bool `yaml:"soft_fail"`
	// ReadyStatus lists the source's status codes that mean "the file is there"; default 2xx.
	ReadyStatus []int `yaml:"ready_status"`
	// Webhook enables POST /hooks/<pipeline> on the sensor (push mode).
	Webhook *Webhook `yaml:"webhook"`
}

// Webhook authenticates pushes that mark a ds available: an HMAC-SHA256 signature with Secret
// (a reference) over the webhook id, timestamp and body.
type Webhook struct {
	Secret secret.Value `yaml:"secret"`
	// MaxBody is the largest body accepted, in bytes (default 65536).
	MaxBody int64 `yaml:"max_body"`
}

// MaxWait is the longest the sensor parks a waiting run between two pokes.
func (s Sensor) MaxWait() time.Duration {
	if s.Backoff > 1 && s.MaxInterval > s.PokeInterval {
		return s.MaxInterval
	}
	return s.PokeInterval
}

// JitterShare is Jitter with its default applied.
func (s Sensor) JitterShare() float64 {
	if s.Jitter == nil {
		return 0.1
	}
	return *s.Jitter
}

// Lease is the one-active-run lock.
type Lease struct {
	TTL time.Duration `yaml:"ttl"`
	// OnBusy is "queue" (wait deferrably for the lease) or "skip" (drop the run).
	OnBusy string `yaml:"on_busy"`
}

// Landing says where raw files go; {pipeline} and {ds} in Key are replaced.
type Landing struct {
	Key string `yaml:"key"`
}

// Target is the partitioned table the pipeline loads.
type Target struct {
	Schema string `yaml:"schema"`
	Table  string `yaml:"table"`
	// PartitionColumn is optional: the contract names the partition column (and grain); when set
	// here it must agree with the contract (checked where contracts are loaded).
	PartitionColumn string `yaml:"partition_column"`
}

// Select is the dbt selection that loads the pipeline.
type Select struct {
	Select string `yaml:"select"`
}

// Retries is the retry policy for transient failures: a failing step is redelivered up to Max
// more times, then the run fails. The n-th retry waits Delay·Backoff^(n−1), at most Cap(),
// shortened (never lengthened) by a random share of at most Jitter. Steps overrides the policy
// for one step (sensor, fetcher, validator, partitioner, dbtrunner, alerter); what an override
// leaves unset comes from the pipeline's policy.
type Retries struct {
	Max      *int               `yaml:"max"`
	Delay    time.Duration      `yaml:"delay"`
	Backoff  float64            `yaml:"backoff"`
	MaxDelay time.Duration      `yaml:"max_delay"`
	Jitter   *float64           `yaml:"jitter"`
	Steps    map[string]Retries `yaml:"steps"`
}

// RetrySteps are the steps a retries.steps override may name.
var RetrySteps = []string{"sensor", "fetcher", "validator", "partitioner", "dbtrunner", "alerter"}

// RetryPolicy is the retry policy of one step: the pipeline's, with the step's override applied.
func (p *Pipeline) RetryPolicy(step string) Retries {
	r := p.Retries
	r.Steps = nil
	o, ok := p.Retries.Steps[step]
	if !ok {
		return r
	}
	if o.Max != nil {
		r.Max = o.Max
	}
	if o.Delay != 0 {
		r.Delay = o.Delay
	}
	if o.Backoff != 0 {
		r.Backoff = o.Backoff
	}
	if o.MaxDelay != 0 {
		r.MaxDelay = o.MaxDelay
	}
	if o.Jitter != nil {
		r.Jitter = o.Jitter
	}
	return r
}

// DelayFor is the wait before retry number n (1 for the first retry); rnd in [0,1) draws the
// jitter.
func (r Retries) DelayFor(n int, rnd float64) time.Duration {
	d := float64(r.Delay)
	if r.Backoff > 1 && n > 1 {
		d *= math.Pow(r.Backoff, float64(n-1))
	}
	if limit := float64(r.Cap()); d > limit {
		d = limit
	}
	if r.Jitter != nil {
		d -= *r.Jitter * rnd * d
	}
	return time.Duration(d)
}

// Cap is the longest wait: MaxDelay, or by default the delay (10 times it with a backoff).
func (r Retries) Cap() time.Duration {
	switch {
	case r.MaxDelay > 0:
		return r.MaxDelay
	case r.Backoff > 1:
		return 10 * r.Delay
	}
	return r.Delay
}

func (r Retries) validate(at string) error {
	if r.MaxRetries() < 0 {
		return fieldErr(at+".max", "must not be negative")
	}
	// The broker gives up on a message after 100 deliveries (bus.MaxDeliveries), waits included.
	if r.MaxRetries() > 50 {
		return fieldErr(at+".max", "%d is more than 50", r.MaxRetries())
	}
	if r.Delay <= 0 {
		return fieldErr(at+".delay", "%v must be positive", r.Delay)
	}
	if r.Backoff < 1 || r.Backoff > 10 {
		return fieldErr(at+".backoff", "%v must be between 1 (a fixed delay) and 10", r.Backoff)
	}
	if r.Cap() < r.Delay {
		return fieldErr(at+".max_delay", "%v is shorter than the delay (%v)", r.MaxDelay, r.Delay)
	}
	if r.Jitter != nil && (*r.Jitter < 0 || *r.Jitter >= 1) {
		return fieldErr(at+".jitter", "%v must be at least 0 and less than 1", *r.Jitter)
	}
	return nil
}

// SLA is a pipeline's deadline: a run not completed Within of its scheduled time (the end of
// its data interval for a scheduled run, the request time otherwise) gets one sla_missed alert.
type SLA struct {
	Within time.Duration `yaml:"within"`
}

// Notices are optional messages besides failure alerts.
type Notices struct {
	// Success announces every completed run.
	Success bool `yaml:"success"`
	// Recovery announces a completed run whose pipeline's previous run failed.
	Recovery bool `yaml:"recovery"`
}

// DefaultMaxBytes is source.max_bytes when the config does not set it: 10 GiB.
const DefaultMaxBytes = 10 << 30

// MaxObjectBytes is the largest object S3 stores (5 TiB), so the largest source.max_bytes.
const MaxObjectBytes = 5 << 40

// MaxRetries is Retries.Max with its default (3, the seed's) applied.
func (r Retries) MaxRetries() int {
	if r.Max == nil {
		return 3
	}
	return *r.Max
}

// Load reads, decodes, defaults and validates the config file at path, and resolves its
// references with lookup. Errors name the file and line.
func Load(path string, lookup secret.Lookup) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(path, b)
	if err != nil {
		return nil, err
	}
	if err := cfg.Resolve(lookup); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

var yamlLine = regexp.MustCompile(`line (\d+): `)

// Parse decodes and validates config text; name is used in errors and to resolve relative paths.
func Parse(name string, b []byte) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		// yaml.v3 says "yaml: unmarshal errors:\n  line 3: field x not found"; make it file:line.
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			msg = name + ":" + m[1] + ": " + yamlLine.ReplaceAllString(msg, "")
			return nil, errors.New(strings.ReplaceAll(msg, "\n  ", "; "))
		}
		return nil, fmt.Errorf("%s: %s", name, msg)
	}
	var root yaml.Node
	_ = yaml.Unmarshal(b, &root)
	cfg.Dir = filepath.Dir(name)
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("%s:%d: %s: %s", name, lineOf(&root, fe.Path), fe.Path, fe.Msg)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &cfg, nil
}

// Resolve resolves every reference in the config.
func (c *Config) Resolve(lookup secret.Lookup) error {
	vals := []*secret.Value{&c.NATS.URL, &c.NATS.User, &c.NATS.Password, &c.NATS.Creds, &c.NATS.NKey, &c.Postgres.URL, &c.S3.Endpoint, &c.S3.AccessKey, &c.S3.SecretKey}
	if c.Alerts.Slack != nil {
		vals = append(vals, &c.Alerts.Slack.Token)
	}
	if c.Alerts.Email != nil {
		vals = append(vals, &c.Alerts.Email.Password)
	}
	if c.Alerts.SNS != nil {
		vals = append(vals, &c.Alerts.SNS.AccessKey, &c.Alerts.SNS.SecretKey)
	}
	vals = append(vals, &c.Console.Password)
	for i := range c.Pipelines {
		if w := c.Pipelines[i].Sensor.Webhook; w != nil {
			vals = append(vals, &w.Secret)
		}
		headers := c.Pipelines[i].Source.Headers
		for name, v := range headers {
			if err := v.Resolve(lookup); err != nil {
				return err
			}
			headers[name] = v
		}
	}
	for _, v := range vals {
		if v.IsZero() {
			continue
		}
		if err := v.Resolve(lookup); err != nil {
			return err
		}
	}
	if urlHasCredentials(c.NATS.URL.Reveal()) {
		return fmt.Errorf("nats.url (%s) holds credentials: set nats.user/nats.password, nats.creds or nats.nkey (secret references) instead", c.NATS.URL)
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

// Secrets returns the resolved secret values, for redaction checks.
func (c *Config) Secrets() []string {
	var out []string
	add := func(v secret.Value) {
		if s := v.Reveal(); s != "" && v.IsReference() {
			out = append(out, s)
		}
	}
	add(c.NATS.Password)
	add(c.NATS.Creds)
	add(c.NATS.NKey)
	add(c.Postgres.URL)
	add(c.S3.AccessKey)
	add(c.S3.SecretKey)
	if c.Alerts.Slack != nil {
		add(c.Alerts.Slack.Token)
	}
	if c.Alerts.Email != nil {
		add(c.Alerts.Email.Password)
	}
	if c.Alerts.SNS != nil {
		add(c.Alerts.SNS.AccessKey)
		add(c.Alerts.SNS.SecretKey)
	}
	add(c.Console.Password)
	for _, p := range c.Pipelines {
		if p.Sensor.Webhook != nil {
			add(p.Sensor.Webhook.Secret)
		}
		for _, v := range p.Source.Headers {
			add(v)
		}
	}
	return out
}

// Pipeline returns the named pipeline.
func (c *Config) Pipeline(name string) (*Pipeline, bool) {
	for i := range c.Pipelines {
		if c.Pipelines[i].Name == name {
			return &c.Pipelines[i], true
		}
	}
	return nil, false
}

// Path resolves p against the config file's directory.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Dir, p)
}

func (c *Config) applyDefaults() {
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 30 * time.Second
	}
	if c.NATS.Listen == "" {
		c.NATS.Listen = "127.0.0.1:4222"
	}
	if c.NATS.DataDir == "" {
		c.NATS.DataDir = ".sluice/nats"
	}
	if c.NATS.Replicas == 0 {
		c.NATS.Replicas = 1
	}
	if c.NATS.SubjectPrefix == "" {
		c.NATS.SubjectPrefix = "etl"
	}
	if c.NATS.Stream == "" {
		c.NATS.Stream = "SLUICE"
	}
	if c.S3.Region == "" {
		c.S3.Region = "us-east-1"
	}
	if c.DBT.Executable == "" {
		c.DBT.Executable = "dbt"
	}
	if c.DBT.ProjectDir == "" {
		c.DBT.ProjectDir = "dbt_project"
	}
	if c.DBT.Threads == 0 {
		c.DBT.Threads = 4
	}
	if c.Lineage.Namespace == "" {
		c.Lineage.Namespace = "sluice"
	}
	if c.Console.Addr == "" {
		c.Console.Addr = "127.0.0.1:8090"
	}
	if c.Console.URL == "" {
		c.Console.URL = "http://" + c.Console.Addr
	}
	c.Console.URL = strings.TrimRight(c.Console.URL, "/")
	if c.Alerts.RunURL == "" {
		c.Alerts.RunURL = c.Console.URL + "/runs/{pipeline}/{ds}/{run_id}"
	}
	if c.Console.Logs.MaxAge == 0 {
		c.Console.Logs.MaxAge = 7 * 24 * time.Hour
	}
	if c.Console.Logs.MaxBytes == 0 {
		c.Console.Logs.MaxBytes = 1 << 30
	}
	if e := c.Alerts.Email; e != nil {
		if e.Port == 0 {
			e.Port = 587
		}
		if e.TLS == "" {
			e.TLS = "starttls"
		}
	}
	for i := range c.Pipelines {
		p := &c.Pipelines[i]
		if p.Source.Method == "" {
			p.Source.Method = "HEAD"
		}
		if p.Timezone == "" {
			p.Timezone = "UTC"
		}
		if p.Sensor.PokeInterval == 0 {
			p.Sensor.PokeInterval = 60 * time.Second
		}
		if p.Sensor.Timeout == 0 {
			p.Sensor.Timeout = time.Hour
		}
		if p.Sensor.Backoff == 0 {
			p.Sensor.Backoff = 1
		}
		if p.Sensor.MaxInterval == 0 {
			p.Sensor.MaxInterval = p.Sensor.PokeInterval
			if p.Sensor.Backoff > 1 {
				p.Sensor.MaxInterval = 10 * p.Sensor.PokeInterval
			}
		}
		if w := p.Sensor.Webhook; w != nil && w.MaxBody == 0 {
			w.MaxBody = 64 << 10
		}
		if p.Lease.TTL == 0 {
			p.Lease.TTL = 2 * time.Minute
		}
		if p.Lease.OnBusy == "" {
			p.Lease.OnBusy = "queue"
		}
		if p.Landing.Key == "" {
			p.Landing.Key = "raw/{pipeline}/{ds}.csv"
		}
		if p.Contract == "" {
			p.Contract = p.Name
		}
		if p.StagingTable == "" {
			p.StagingTable = "staging_" + p.Name
		}
		if p.Target.Schema == "" {
			p.Target.Schema = "public"
		}
		if p.Target.Table == "" {
			p.Target.Table = p.Name
		}
		if p.DBT.Select == "" {
			p.DBT.Select = "+" + p.Target.Table
		}
		if p.Retries.Delay == 0 {
			p.Retries.Delay = 10 * time.Minute
		}
		if p.Retries.Backoff == 0 {
			p.Retries.Backoff = 1
		}
		if p.Source.MaxBytes == 0 {
			p.Source.MaxBytes = DefaultMaxBytes
		}
		if p.Retention.ExportKey == "" {
			p.Retention.ExportKey = "archive/{pipeline}/{ds}.csv.gz"
		}
		if p.Alerts == nil { // every configured channel
			p.Alerts = []string{}
			if c.Alerts.Slack != nil {
				p.Alerts = append(p.Alerts, "slack")
			}
			if c.Alerts.Email != nil {
				p.Alerts = append(p.Alerts, "email")
			}
			if c.Alerts.SNS != nil {
				p.Alerts = append(p.Alerts, "sns")
			}
		}
	}
}

// FieldError is a validation error at a config path such as pipelines[0].sensor.timeout.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

func fieldErr(path, format string, args ...any) error {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

var (
	identRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	nameRe  = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
	tokenRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	// headerRe is an HTTP header name (RFC 9110 token).
	headerRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

func (n *NATS) validate() error {
	if urlHasCredentials(n.URL.Literal()) {
		return fieldErr("nats.url", "holds credentials: set nats.user/nats.password, nats.creds or nats.nkey (secret references) instead")
	}
	for path, v := range map[string]secret.Value{"nats.password": n.Password, "nats.creds": n.Creds, "nats.nkey": n.NKey} {
		if err := v.RequireReference(); err != nil {
			return fieldErr(path, "%v", err)
		}
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
	return nil
}

// Validate checks values and cross-field rules; it returns the first problem as a *FieldError.
func (c *Config) Validate() error {
	if !tokenRe.MatchString(c.NATS.SubjectPrefix) {
		return fieldErr("nats.subject_prefix", "%q must be one subject token (letters, digits, _ or -)", c.NATS.SubjectPrefix)
	}
	if c.NATS.SubjectPrefix == "logs" {
		return fieldErr("nats.subject_prefix", `"logs" is taken by the log stream (logs.<prefix>.>)`)
	}
	if !tokenRe.MatchString(c.NATS.Stream) {
		return fieldErr("nats.stream", "%q must be letters, digits, _ or -", c.NATS.Stream)
	}
	if err := c.NATS.validate(); err != nil {
		return err
	}
	if c.Postgres.URL.IsZero() {
		return fieldErr("postgres.url", "is required")
	}
	if err := c.Postgres.URL.RequireReference(); err != nil {
		return fieldErr("postgres.url", "holds a password, so it %v", err)
	}
	if c.S3.Bucket == "" {
		return fieldErr("s3.bucket", "is required")
	}
	for path, v := range map[string]secret.Value{"s3.access_key": c.S3.AccessKey, "s3.secret_key": c.S3.SecretKey} {
		if err := v.RequireReference(); err != nil {
			return fieldErr(path, "%v", err)
		}
	}
	if c.DBT.Threads < 1 {
		return fieldErr("dbt.threads", "must be at least 1")
	}
	if s := c.Alerts.Slack; s != nil {
		if s.Token.IsZero() {
			return fieldErr("alerts.slack.token", "is required")
		}
		if err := s.Token.RequireReference(); err != nil {
			return fieldErr("alerts.slack.token", "%v", err)
		}
		if s.Channel == "" {
			return fieldErr("alerts.slack.channel", "is required")
		}
	}
	if e := c.Alerts.Email; e != nil {
		if e.Host == "" {
			return fieldErr("alerts.email.host", "is required")
		}
		if e.Port < 1 || e.Port > 65535 {
			return fieldErr("alerts.email.port", "%d is not a port", e.Port)
		}
		if err := e.Password.RequireReference(); err != nil {
			return fieldErr("alerts.email.password", "%v", err)
		}
		switch e.TLS {
		case "none", "starttls", "tls":
		default:
			return fieldErr("alerts.email.tls", "%q must be none, starttls or tls", e.TLS)
		}
		if e.From == "" || len(e.To) == 0 {
			return fieldErr("alerts.email", "needs from and at least one to address")
		}
	}
	if s := c.Alerts.SNS; s != nil {
		if parts := strings.Split(s.TopicARN, ":"); len(parts) != 6 || parts[0] != "arn" || parts[2] != "sns" || parts[5] == "" {
			return fieldErr("alerts.sns.topic_arn", "%q is not an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>)", s.TopicARN)
		}
		for path, v := range map[string]secret.Value{"alerts.sns.access_key": s.AccessKey, "alerts.sns.secret_key": s.SecretKey} {
			if err := v.RequireReference(); err != nil {
				return fieldErr(path, "%v", err)
			}
		}
		if s.AccessKey.IsZero() != s.SecretKey.IsZero() {
			return fieldErr("alerts.sns", "needs both access_key and secret_key, or neither (the default credential chain)")
		}
	}
	if u := c.Lineage.URL; u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return fieldErr("lineage.url", "%q must be an http(s) URL", u)
	}
	if _, _, err := net.SplitHostPort(c.Console.Addr); err != nil {
		return fieldErr("console.addr", "%q is not host:port", c.Console.Addr)
	}
	if !strings.HasPrefix(c.Console.URL, "http://") && !strings.HasPrefix(c.Console.URL, "https://") {
		return fieldErr("console.url", "%q must be an http(s) URL", c.Console.URL)
	}
	if err := c.Console.Password.RequireReference(); err != nil {
		return fieldErr("console.password", "%v", err)
	}
	if c.Console.Logs.MaxAge < time.Minute {
		return fieldErr("console.logs.max_age", "%v is shorter than a minute", c.Console.Logs.MaxAge)
	}
	if c.Console.Logs.MaxBytes < 1<<20 {
		return fieldErr("console.logs.max_bytes", "%d is less than 1 MiB", c.Console.Logs.MaxBytes)
	}
	if r := c.NATS.Replicas; r < 1 || r > 5 {
		return fieldErr("nats.replicas", "%d must be between 1 and 5 (3 on a three-node cluster)", r)
	}
	if c.ConnectTimeout < time.Second {
		return fieldErr("connect_timeout", "%v is shorter than one second", c.ConnectTimeout)
	}
	if len(c.Pipelines) == 0 {
		return fieldErr("pipelines", "declare at least one pipeline")
	}
	seen := map[string]bool{}
	for i := range c.Pipelines {
		p := &c.Pipelines[i]
		at := "pipelines[" + strconv.Itoa(i) + "]"
		if !nameRe.MatchString(p.Name) {
			return fieldErr(at+".name", "%q must be lowercase letters, digits and _, starting with a letter", p.Name)
		}
		if seen[p.Name] {
			return fieldErr(at+".name", "pipeline %q is declared twice", p.Name)
		}
		seen[p.Name] = true
		if !strings.Contains(p.Source.URL, "{ds}") || !(strings.HasPrefix(p.Source.URL, "http://") || strings.HasPrefix(p.Source.URL, "https://")) {
			return fieldErr(at+".source.url", "%q must be an http(s) URL containing {ds}", p.Source.URL)
		}
		if u, err := url.Parse(strings.ReplaceAll(p.Source.URL, "{ds}", "2006-01-02")); err != nil || u.Host == "" {
			return fieldErr(at+".source.url", "%q is not a URL", p.Source.URL)
		} else if u.User != nil {
			return fieldErr(at+".source.url", "holds credentials (user:password@); send them as a header from a reference (source.headers: {Authorization: env:API_TOKEN})")
		}
		for name, v := range p.Source.Headers {
			if !headerRe.MatchString(name) {
				return fieldErr(at+".source.headers", "%q is not a header name", name)
			}
			if err := v.RequireReference(); err != nil {
				return fieldErr(at+".source.headers."+name, "%v", err)
			}
		}
		for _, h := range p.Source.RedirectHosts {
			if h == "" || strings.ContainsAny(h, "/@ ") {
				return fieldErr(at+".source.redirect_hosts", "%q must be a host name or host:port", h)
			}
		}
		if p.Source.Method != "HEAD" && p.Source.Method != "GET" {
			return fieldErr(at+".source.method", "%q must be HEAD or GET", p.Source.Method)
		}
		if p.Sensor.PokeInterval < 10*time.Millisecond {
			return fieldErr(at+".sensor.poke_interval", "%v is too short", p.Sensor.PokeInterval)
		}
		if p.Sensor.Timeout < p.Sensor.PokeInterval {
			return fieldErr(at+".sensor.timeout", "%v is shorter than the poke interval", p.Sensor.Timeout)
		}
		if p.Lease.TTL < time.Second {
			return fieldErr(at+".lease.ttl", "%v is shorter than one second", p.Lease.TTL)
		}
		if p.Sensor.Backoff < 1 || p.Sensor.Backoff > 10 {
			return fieldErr(at+".sensor.backoff", "%v must be between 1 (a fixed interval) and 10", p.Sensor.Backoff)
		}
		if p.Sensor.MaxInterval < p.Sensor.PokeInterval {
			return fieldErr(at+".sensor.max_interval", "%v is shorter than the poke interval (%v)", p.Sensor.MaxInterval, p.Sensor.PokeInterval)
		}
		if j := p.Sensor.JitterShare(); j < 0 || j >= 1 {
			return fieldErr(at+".sensor.jitter", "%v must be at least 0 and less than 1", j)
		}
		for _, code := range p.Sensor.ReadyStatus {
			if code < 100 || code > 599 {
				return fieldErr(at+".sensor.ready_status", "%d is not an HTTP status code", code)
			}
		}
		if w := p.Sensor.Webhook; w != nil {
			if w.Secret.IsZero() {
				return fieldErr(at+".sensor.webhook.secret", "is required")
			}
			if err := w.Secret.RequireReference(); err != nil {
				return fieldErr(at+".sensor.webhook.secret", "%v", err)
			}
			if w.MaxBody < 1 || w.MaxBody > 1<<20 {
				return fieldErr(at+".sensor.webhook.max_body", "%d must be between 1 and 1048576 bytes", w.MaxBody)
			}
		}
		if p.Lease.TTL <= p.Sensor.PokeInterval {
			return fieldErr(at+".lease.ttl", "%v must be longer than the poke interval (%v), or a waiting run loses its lease", p.Lease.TTL, p.Sensor.PokeInterval)
		}
		if p.Lease.TTL <= p.Sensor.MaxWait() {
			return fieldErr(at+".lease.ttl", "%v must be longer than the sensor's longest wait (max_interval %v), or a waiting run loses its lease", p.Lease.TTL, p.Sensor.MaxWait())
		}
		if p.Lease.OnBusy != "queue" && p.Lease.OnBusy != "skip" {
			return fieldErr(at+".lease.on_busy", "%q must be queue or skip", p.Lease.OnBusy)
		}
		if !strings.Contains(p.Landing.Key, "{ds}") {
			return fieldErr(at+".landing.key", "%q must contain {ds}", p.Landing.Key)
		}
		for field, v := range map[string]string{"staging_table": p.StagingTable, "target.schema": p.Target.Schema, "target.table": p.Target.Table, "target.partition_column": p.Target.PartitionColumn} {
			if !identRe.MatchString(v) && !(field == "target.partition_column" && v == "") {
				return fieldErr(at+"."+field, "%q is not a plain lowercase SQL identifier", v)
			}
		}
		if _, err := time.LoadLocation(p.Timezone); err != nil {
			return fieldErr(at+".timezone", "%q is not an IANA time zone name", p.Timezone)
		}
		if p.Schedule != "" {
			if _, err := schedule.Parse(p.Schedule, p.Timezone); err != nil {
				return fieldErr(at+".schedule", "%v", err)
			}
		}
		if p.StartDate != "" {
			if _, err := time.Parse(time.DateOnly, p.StartDate); err != nil {
				return fieldErr(at+".start_date", "%q is not YYYY-MM-DD", p.StartDate)
			}
		}
		if (p.Catchup || p.StartDate != "") && p.Schedule == "" {
			return fieldErr(at+".schedule", "catchup and start_date need a schedule")
		}
		if err := p.Retries.validate(at + ".retries"); err != nil {
			return err
		}
		for step := range p.Retries.Steps {
			if !slices.Contains(RetrySteps, step) {
				return fieldErr(at+".retries.steps", "unknown step %q (%s)", step, strings.Join(RetrySteps, ", "))
			}
			if len(p.Retries.Steps[step].Steps) > 0 {
				return fieldErr(at+".retries.steps."+step+".steps", "overrides do not nest")
			}
			if err := p.RetryPolicy(step).validate(at + ".retries.steps." + step); err != nil {
				return err
			}
		}
		for step, d := range p.Deadlines {
			if !slices.Contains(RetrySteps, step) {
				return fieldErr(at+".deadlines", "unknown step %q (%s)", step, strings.Join(RetrySteps, ", "))
			}
			if d < time.Second {
				return fieldErr(at+".deadlines."+step, "%v is shorter than one second", d)
			}
		}
		if p.SLA != nil && p.SLA.Within < time.Second {
			return fieldErr(at+".sla.within", "%v must be at least one second", p.SLA.Within)
		}
		if p.Source.MaxBytes < 0 || p.Source.MaxBytes > MaxObjectBytes {
			return fieldErr(at+".source.max_bytes", "%d must be between 1 and %d (5 TiB, S3's largest object)", p.Source.MaxBytes, int64(MaxObjectBytes))
		}
		if p.MaxBadRows < 0 {
			return fieldErr(at+".max_bad_rows", "%d must not be negative", p.MaxBadRows)
		}
		if p.Retention.Days < 0 {
			return fieldErr(at+".retention.days", "%d must not be negative (0 keeps every partition)", p.Retention.Days)
		}
		if p.Retention.ExportToS3 && p.Retention.Days == 0 {
			return fieldErr(at+".retention.export_to_s3", "needs retention.days: without it no partition is ever dropped")
		}
		if !strings.Contains(p.Retention.ExportKey, "{ds}") {
			return fieldErr(at+".retention.export_key", "%q must contain {ds}", p.Retention.ExportKey)
		}
		for i, a := range p.AlertsFallback {
			if (a == "slack" && c.Alerts.Slack == nil) || (a == "email" && c.Alerts.Email == nil) || (a == "sns" && c.Alerts.SNS == nil) {
				return fieldErr(at+".alerts_fallback", "channel %q is not configured under alerts", a)
			}
			if a != "slack" && a != "email" && a != "sns" {
				return fieldErr(at+".alerts_fallback", "unknown channel %q (slack, email, sns)", a)
			}
			if slices.Contains(p.Alerts, a) || slices.Contains(p.AlertsFallback[:i], a) {
				return fieldErr(at+".alerts_fallback", "channel %q is already listed", a)
			}
		}
		if p.SlackChannel != "" && c.Alerts.Slack == nil {
			return fieldErr(at+".slack_channel", "needs alerts.slack")
		}
		for _, a := range p.Alerts {
			if (a == "slack" && c.Alerts.Slack == nil) || (a == "email" && c.Alerts.Email == nil) || (a == "sns" && c.Alerts.SNS == nil) {
				return fieldErr(at+".alerts", "channel %q is not configured under alerts", a)
			}
			if a != "slack" && a != "email" && a != "sns" {
				return fieldErr(at+".alerts", "unknown channel %q (slack, email, sns)", a)
			}
		}
	}
	return nil
}

// lineOf finds the line of a path like pipelines[0].sensor.timeout in a YAML tree, falling back
// to the nearest existing parent.
func lineOf(root *yaml.Node, path string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, part := range strings.Split(path, ".") {
		key, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 {
			key = part[:i]
			idx, _ = strconv.Atoi(strings.TrimSuffix(part[i+1:], "]"))
		}
		next := mapValue(n, key)
		if next == nil {
			return line
		}
		line, n = next.Line, next
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return line
			}
			n = n.Content[idx]
			line = n.Line
		}
	}
	return line
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// Expand replaces {pipeline} and {ds} (and {run_id}) in a template.
func Expand(tmpl, pipeline, ds, runID string) string {
	return strings.NewReplacer("{pipeline}", pipeline, "{ds}", ds, "{run_id}", runID).Replace(tmpl)
}
