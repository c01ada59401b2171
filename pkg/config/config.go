// Package config loads sluice's one YAML file: connections and pipelines. Decoding is strict
// (unknown keys fail) and every error names the file and line, as thanos objstore does.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluice-etl/sluice/pkg/secret"
)

// Config is the whole file.
type Config struct {
	NATS      NATS       `yaml:"nats"`
	Postgres  Postgres   `yaml:"postgres"`
	S3        S3         `yaml:"s3"`
	DBT       DBT        `yaml:"dbt"`
	Alerts    Alerts     `yaml:"alerts"`
	Pipelines []Pipeline `yaml:"pipelines"`

	// Dir is the directory of the config file; relative paths in it are resolved against Dir.
	Dir string `yaml:"-"`
}

// NATS says where the broker is. With URL empty sluice runs an embedded server.
type NATS struct {
	URL           secret.Value `yaml:"url"`
	Listen        string       `yaml:"listen"`
	DataDir       string       `yaml:"data_dir"`
	SubjectPrefix string       `yaml:"subject_prefix"`
	Stream        string       `yaml:"stream"`
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
	Slack  *Slack `yaml:"slack"`
	Email  *Email `yaml:"email"`
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

// Pipeline is one declared pipeline.
type Pipeline struct {
	Name         string  `yaml:"name"`
	Source       Source  `yaml:"source"`
	Sensor       Sensor  `yaml:"sensor"`
	Lease        Lease   `yaml:"lease"`
	Landing      Landing `yaml:"landing"`
	Contract     string  `yaml:"contract"`
	StagingTable string  `yaml:"staging_table"`
	Target       Target  `yaml:"target"`
	DBT          Select  `yaml:"dbt"`
	Retries      Retries `yaml:"retries"`
	// Alerts lists the channels ("slack", "email") failures go to; default: all configured.
	Alerts []string `yaml:"alerts"`
}

// Source is where a ds's file comes from. {ds} in URL is replaced by the date.
type Source struct {
	URL    string `yaml:"url"`
	Method string `yaml:"method"`
}

// Sensor is the deferrable wait for the source.
type Sensor struct {
	PokeInterval time.Duration `yaml:"poke_interval"`
	Timeout      time.Duration `yaml:"timeout"`
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
	Schema          string `yaml:"schema"`
	Table           string `yaml:"table"`
	PartitionColumn string `yaml:"partition_column"`
}

// Select is the dbt selection that loads the pipeline.
type Select struct {
	Select string `yaml:"select"`
}

// Retries is the retry policy for transient failures: a failing step is redelivered up to Max
// more times, Delay apart, then the run fails.
type Retries struct {
	Max   *int          `yaml:"max"`
	Delay time.Duration `yaml:"delay"`
}

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
	vals := []*secret.Value{&c.NATS.URL, &c.Postgres.URL, &c.S3.Endpoint, &c.S3.AccessKey, &c.S3.SecretKey}
	if c.Alerts.Slack != nil {
		vals = append(vals, &c.Alerts.Slack.Token)
	}
	if c.Alerts.Email != nil {
		vals = append(vals, &c.Alerts.Email.Password)
	}
	for _, v := range vals {
		if v.IsZero() {
			continue
		}
		if err := v.Resolve(lookup); err != nil {
			return err
		}
	}
	return nil
}

// Secrets returns the resolved secret values, for redaction checks.
func (c *Config) Secrets() []string {
	var out []string
	add := func(v secret.Value) {
		if s := v.Reveal(); s != "" && v.IsReference() {
			out = append(out, s)
		}
	}
	add(c.Postgres.URL)
	add(c.S3.AccessKey)
	add(c.S3.SecretKey)
	if c.Alerts.Slack != nil {
		add(c.Alerts.Slack.Token)
	}
	if c.Alerts.Email != nil {
		add(c.Alerts.Email.Password)
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
	if c.NATS.Listen == "" {
		c.NATS.Listen = "127.0.0.1:4222"
	}
	if c.NATS.DataDir == "" {
		c.NATS.DataDir = ".sluice/nats"
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
		if p.Sensor.PokeInterval == 0 {
			p.Sensor.PokeInterval = 60 * time.Second
		}
		if p.Sensor.Timeout == 0 {
			p.Sensor.Timeout = time.Hour
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
		if p.Target.PartitionColumn == "" {
			p.Target.PartitionColumn = "load_date"
		}
		if p.DBT.Select == "" {
			p.DBT.Select = "+" + p.Target.Table
		}
		if p.Retries.Delay == 0 {
			p.Retries.Delay = 10 * time.Minute
		}
		if p.Alerts == nil { // every configured channel
			p.Alerts = []string{}
			if c.Alerts.Slack != nil {
				p.Alerts = append(p.Alerts, "slack")
			}
			if c.Alerts.Email != nil {
				p.Alerts = append(p.Alerts, "email")
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
)

// Validate checks values and cross-field rules; it returns the first problem as a *FieldError.
func (c *Config) Validate() error {
	if !tokenRe.MatchString(c.NATS.SubjectPrefix) {
		return fieldErr("nats.subject_prefix", "%q must be one subject token (letters, digits, _ or -)", c.NATS.SubjectPrefix)
	}
	if !tokenRe.MatchString(c.NATS.Stream) {
		return fieldErr("nats.stream", "%q must be letters, digits, _ or -", c.NATS.Stream)
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
		if p.Lease.TTL <= p.Sensor.PokeInterval {
			return fieldErr(at+".lease.ttl", "%v must be longer than the poke interval (%v), or a waiting run loses its lease", p.Lease.TTL, p.Sensor.PokeInterval)
		}
		if p.Lease.OnBusy != "queue" && p.Lease.OnBusy != "skip" {
			return fieldErr(at+".lease.on_busy", "%q must be queue or skip", p.Lease.OnBusy)
		}
		if !strings.Contains(p.Landing.Key, "{ds}") {
			return fieldErr(at+".landing.key", "%q must contain {ds}", p.Landing.Key)
		}
		for field, v := range map[string]string{"staging_table": p.StagingTable, "target.schema": p.Target.Schema, "target.table": p.Target.Table, "target.partition_column": p.Target.PartitionColumn} {
			if !identRe.MatchString(v) {
				return fieldErr(at+"."+field, "%q is not a plain lowercase SQL identifier", v)
			}
		}
		if p.Retries.MaxRetries() < 0 {
			return fieldErr(at+".retries.max", "must not be negative")
		}
		for _, a := range p.Alerts {
			if (a == "slack" && c.Alerts.Slack == nil) || (a == "email" && c.Alerts.Email == nil) {
				return fieldErr(at+".alerts", "channel %q is not configured under alerts", a)
			}
			if a != "slack" && a != "email" {
				return fieldErr(at+".alerts", "unknown channel %q (slack, email)", a)
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
