package config

import (
	"fmt"
	"strconv"

	"github.com/sluice-etl/sluice/pkg/secret"
)

// secretField is one field of the config that takes a reference (env:NAME, file:/path).
type secretField struct {
	path string
	v    *secret.Value
	// secret: the value must be a reference and is redacted from logs. The others (nats.url,
	// nats.user, s3.endpoint) may be literal; a reference lets one file serve every container.
	secret bool
	// why prefixes the "must be a reference" error.
	why string
}

// secretFields is the one list of the config's references: Resolve resolves them, Secrets
// returns their values for redaction, and Validate refuses literal text in the secret ones.
// fn gets each set field in file order; a source header's value is written back after fn.
func (c *Config) secretFields(fn func(f secretField) error) error {
	fields := []secretField{
		{"nats.url", &c.NATS.URL, false, ""},
		{"nats.user", &c.NATS.User, false, ""},
		{"nats.password", &c.NATS.Password, true, ""},
		{"nats.creds", &c.NATS.Creds, true, ""},
		{"nats.nkey", &c.NATS.NKey, true, ""},
		{"postgres.url", &c.Postgres.URL, true, "holds a password, so it "},
		{"s3.endpoint", &c.S3.Endpoint, false, ""},
		{"s3.access_key", &c.S3.AccessKey, true, ""},
		{"s3.secret_key", &c.S3.SecretKey, true, ""},
	}
	if s := c.Alerts.Slack; s != nil {
		fields = append(fields, secretField{"alerts.slack.token", &s.Token, true, ""})
	}
	if e := c.Alerts.Email; e != nil {
		fields = append(fields, secretField{"alerts.email.password", &e.Password, true, ""})
	}
	if s := c.Alerts.SNS; s != nil {
		fields = append(fields, secretField{"alerts.sns.access_key", &s.AccessKey, true, ""}, secretField{"alerts.sns.secret_key", &s.SecretKey, true, ""})
	}
	fields = append(fields, secretField{"console.password", &c.Console.Password, true, ""})
	for _, f := range fields {
		if err := visitSecret(f, fn); err != nil {
			return err
		}
	}
	for i := range c.Pipelines {
		p := &c.Pipelines[i]
		at := "pipelines[" + strconv.Itoa(i) + "]"
		if w := p.Sensor.Webhook; w != nil {
			if err := visitSecret(secretField{at + ".sensor.webhook.secret", &w.Secret, true, ""}, fn); err != nil {
				return err
			}
		}
		for name, v := range p.Source.Headers {
			err := visitSecret(secretField{at + ".source.headers." + name, &v, true, ""}, fn)
			p.Source.Headers[name] = v
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func visitSecret(f secretField, fn func(secretField) error) error {
	if f.v.IsZero() {
		return nil
	}
	return fn(f)
}

// validateReferences refuses literal text in the fields that hold secrets.
func (c *Config) validateReferences() error {
	return c.secretFields(func(f secretField) error {
		if err := f.v.RequireReference(); f.secret && err != nil {
			return fieldErr(f.path, "%s%v", f.why, err)
		}
		return nil
	})
}

// Resolve resolves every reference in the config.
func (c *Config) Resolve(lookup secret.Lookup) error {
	if err := c.secretFields(func(f secretField) error { return f.v.Resolve(lookup) }); err != nil {
		return err
	}
	if urlHasCredentials(c.NATS.URL.Reveal()) {
		return fmt.Errorf("nats.url (%s) holds credentials: set nats.user/nats.password, nats.creds or nats.nkey (secret references) instead", c.NATS.URL)
	}
	return nil
}

// Secrets returns the resolved secret values, for redaction checks.
func (c *Config) Secrets() []string {
	var out []string
	_ = c.secretFields(func(f secretField) error {
		if s := f.v.Reveal(); s != "" && f.secret && f.v.IsReference() {
			out = append(out, s)
		}
		return nil
	})
	return out
}
