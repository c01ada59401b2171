package config

import (
	"net/url"
	"strings"
	"time"

	"github.com/sluice-etl/sluice/pkg/schedule"
	"github.com/sluice-etl/sluice/pkg/secret"
)

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
	Alerts []AlertChannel `yaml:"alerts"`
	// AlertsFallback lists channels that get an alert when one of Alerts fails for good (Slack's
	// channel_not_found, a rejected login): so a broken primary does not swallow the alert.
	AlertsFallback []AlertChannel `yaml:"alerts_fallback"`
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

// DefaultMaxBytes is source.max_bytes when the config does not set it: 10 GiB.
const DefaultMaxBytes = 10 << 30

// MaxObjectBytes is the largest object S3 stores (5 TiB), so the largest source.max_bytes.
const MaxObjectBytes = 5 << 40

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
	// OnBusy is OnBusyQueue (wait deferrably for the lease) or OnBusySkip (drop the run).
	OnBusy OnBusy `yaml:"on_busy"`
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

// applyDefaults fills what the pipeline leaves unset; its alerts go to every channel configured.
func (p *Pipeline) applyDefaults(alerts *Alerts) {
	setDefault(&p.Source.Method, "HEAD")
	setDefault(&p.Source.MaxBytes, DefaultMaxBytes)
	setDefault(&p.Timezone, "UTC")
	p.Sensor.applyDefaults()
	setDefault(&p.Lease.TTL, 2*time.Minute)
	setDefault(&p.Lease.OnBusy, OnBusyQueue)
	setDefault(&p.Landing.Key, "raw/{pipeline}/{ds}.csv")
	setDefault(&p.Contract, p.Name)
	setDefault(&p.StagingTable, "staging_"+p.Name)
	setDefault(&p.Target.Schema, "public")
	setDefault(&p.Target.Table, p.Name)
	setDefault(&p.DBT.Select, "+"+p.Target.Table)
	p.Retries.applyDefaults()
	setDefault(&p.Retention.ExportKey, "archive/{pipeline}/{ds}.csv.gz")
	if p.Alerts == nil {
		p.Alerts = alerts.configured()
	}
}

func (s *Sensor) applyDefaults() {
	setDefault(&s.PokeInterval, 60*time.Second)
	setDefault(&s.Timeout, time.Hour)
	setDefault(&s.Backoff, 1)
	if s.MaxInterval == 0 {
		s.MaxInterval = s.PokeInterval
		if s.Backoff > 1 {
			s.MaxInterval = 10 * s.PokeInterval
		}
	}
	if w := s.Webhook; w != nil && w.MaxBody == 0 {
		w.MaxBody = 64 << 10
	}
}

// validate checks the pipeline at path at (pipelines[i]); alerts are the configured channels.
func (p *Pipeline) validate(at string, alerts *Alerts) error {
	if !nameRe.MatchString(p.Name) {
		return fieldErr(at+".name", "%q must be lowercase letters, digits and _, starting with a letter", p.Name)
	}
	for _, check := range []func(string) error{p.Source.validate, p.Sensor.validate, p.validateLease, p.validateTables, p.validateSchedule, p.validateRetries} {
		if err := check(at); err != nil {
			return err
		}
	}
	if p.SLA != nil && p.SLA.Within < time.Second {
		return fieldErr(at+".sla.within", "%v must be at least one second", p.SLA.Within)
	}
	return alerts.validateChannels(at, p)
}

func (s *Source) validate(at string) error {
	if !strings.Contains(s.URL, "{ds}") || !isHTTP(s.URL) {
		return fieldErr(at+".source.url", "%q must be an http(s) URL containing {ds}", s.URL)
	}
	if u, err := url.Parse(strings.ReplaceAll(s.URL, "{ds}", "2006-01-02")); err != nil || u.Host == "" {
		return fieldErr(at+".source.url", "%q is not a URL", s.URL)
	} else if u.User != nil {
		return fieldErr(at+".source.url", "holds credentials (user:password@); send them as a header from a reference (source.headers: {Authorization: env:API_TOKEN})")
	}
	for name := range s.Headers {
		if !headerRe.MatchString(name) {
			return fieldErr(at+".source.headers", "%q is not a header name", name)
		}
	}
	for _, h := range s.RedirectHosts {
		if h == "" || strings.ContainsAny(h, "/@ ") {
			return fieldErr(at+".source.redirect_hosts", "%q must be a host name or host:port", h)
		}
	}
	if s.Method != "HEAD" && s.Method != "GET" {
		return fieldErr(at+".source.method", "%q must be HEAD or GET", s.Method)
	}
	if s.MaxBytes < 0 || s.MaxBytes > MaxObjectBytes {
		return fieldErr(at+".source.max_bytes", "%d must be between 1 and %d (5 TiB, S3's largest object)", s.MaxBytes, int64(MaxObjectBytes))
	}
	return nil
}

func (s *Sensor) validate(at string) error {
	if s.PokeInterval < 10*time.Millisecond {
		return fieldErr(at+".sensor.poke_interval", "%v is too short", s.PokeInterval)
	}
	if s.Timeout < s.PokeInterval {
		return fieldErr(at+".sensor.timeout", "%v is shorter than the poke interval", s.Timeout)
	}
	if s.Backoff < 1 || s.Backoff > 10 {
		return fieldErr(at+".sensor.backoff", "%v must be between 1 (a fixed interval) and 10", s.Backoff)
	}
	if s.MaxInterval < s.PokeInterval {
		return fieldErr(at+".sensor.max_interval", "%v is shorter than the poke interval (%v)", s.MaxInterval, s.PokeInterval)
	}
	if j := s.JitterShare(); j < 0 || j >= 1 {
		return fieldErr(at+".sensor.jitter", "%v must be at least 0 and less than 1", j)
	}
	for _, code := range s.ReadyStatus {
		if code < 100 || code > 599 {
			return fieldErr(at+".sensor.ready_status", "%d is not an HTTP status code", code)
		}
	}
	if w := s.Webhook; w != nil {
		if w.Secret.IsZero() {
			return fieldErr(at+".sensor.webhook.secret", "is required")
		}
		if w.MaxBody < 1 || w.MaxBody > 1<<20 {
			return fieldErr(at+".sensor.webhook.max_body", "%d must be between 1 and 1048576 bytes", w.MaxBody)
		}
	}
	return nil
}

// validateLease checks the lease against the sensor: a waiting run must keep its lease.
func (p *Pipeline) validateLease(at string) error {
	if p.Lease.TTL < time.Second {
		return fieldErr(at+".lease.ttl", "%v is shorter than one second", p.Lease.TTL)
	}
	if p.Lease.TTL <= p.Sensor.PokeInterval {
		return fieldErr(at+".lease.ttl", "%v must be longer than the poke interval (%v), or a waiting run loses its lease", p.Lease.TTL, p.Sensor.PokeInterval)
	}
	if p.Lease.TTL <= p.Sensor.MaxWait() {
		return fieldErr(at+".lease.ttl", "%v must be longer than the sensor's longest wait (max_interval %v), or a waiting run loses its lease", p.Lease.TTL, p.Sensor.MaxWait())
	}
	if p.Lease.OnBusy != OnBusyQueue && p.Lease.OnBusy != OnBusySkip {
		return fieldErr(at+".lease.on_busy", "%q must be queue or skip", p.Lease.OnBusy)
	}
	return nil
}

// validateTables checks where the data goes: the landing key, the tables, the rows that may be
// rejected and the retention of partitions.
func (p *Pipeline) validateTables(at string) error {
	if !strings.Contains(p.Landing.Key, "{ds}") {
		return fieldErr(at+".landing.key", "%q must contain {ds}", p.Landing.Key)
	}
	for field, v := range map[string]string{"staging_table": p.StagingTable, "target.schema": p.Target.Schema, "target.table": p.Target.Table, "target.partition_column": p.Target.PartitionColumn} {
		if !identRe.MatchString(v) && !(field == "target.partition_column" && v == "") {
			return fieldErr(at+"."+field, "%q is not a plain lowercase SQL identifier", v)
		}
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
	return nil
}

func (p *Pipeline) validateSchedule(at string) error {
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
	return nil
}

// OnBusy says what a run does when another run holds the pipeline's lease (lease.on_busy).
type OnBusy string

const (
	// OnBusyQueue waits deferrably for the lease; waiting runs take it in request order.
	OnBusyQueue OnBusy = "queue"
	// OnBusySkip drops the run.
	OnBusySkip OnBusy = "skip"
)
