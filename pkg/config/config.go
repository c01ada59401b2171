// Package config loads sluice's one YAML file: connections and pipelines. Decoding is strict
// (unknown keys fail) and every error names the file and line, as thanos objstore does.
//
// The file's sections are types with their defaults and their validation next to them:
// connections.go (nats, postgres, s3, dbt, lineage, console), alerts.go, pipeline.go and
// retries.go; secrets.go holds the one list of the fields that take references, and yaml.go
// decodes the text and finds the line of a path in it.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

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

// Parse decodes and validates config text; name is used in errors and to resolve relative paths.
func Parse(name string, b []byte) (*Config, error) {
	var cfg Config
	root, err := decode(name, b, &cfg)
	if err != nil {
		return nil, err
	}
	cfg.Dir = filepath.Dir(name)
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("%s:%d: %s: %s", name, lineOf(root, fe.Path), fe.Path, fe.Msg)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &cfg, nil
}

func (c *Config) applyDefaults() {
	setDefault(&c.ConnectTimeout, 30*time.Second)
	c.NATS.applyDefaults()
	c.S3.applyDefaults()
	c.DBT.applyDefaults()
	c.Lineage.applyDefaults()
	c.Console.applyDefaults()
	c.Alerts.applyDefaults(c.Console.URL)
	for i := range c.Pipelines {
		c.Pipelines[i].applyDefaults(&c.Alerts)
	}
}

// Validate checks values and cross-field rules; it returns the first problem as a *FieldError.
func (c *Config) Validate() error {
	if err := c.NATS.validateNames(); err != nil {
		return err
	}
	if err := c.validateReferences(); err != nil {
		return err
	}
	for _, section := range []interface{ validate() error }{&c.NATS, &c.Postgres, &c.S3, &c.DBT, &c.Alerts, &c.Lineage, &c.Console} {
		if err := section.validate(); err != nil {
			return err
		}
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
		if err := p.validate(at, &c.Alerts); err != nil {
			return err
		}
		if seen[p.Name] {
			return fieldErr(at+".name", "pipeline %q is declared twice", p.Name)
		}
		seen[p.Name] = true
	}
	return nil
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

// Expand replaces {pipeline} and {ds} (and {run_id}) in a template.
func Expand(tmpl, pipeline, ds, runID string) string {
	return strings.NewReplacer("{pipeline}", pipeline, "{ds}", ds, "{run_id}", runID).Replace(tmpl)
}

// setDefault sets *field to v when the file left it unset (the zero value).
func setDefault[T comparable](field *T, v T) {
	var zero T
	if *field == zero {
		*field = v
	}
}
