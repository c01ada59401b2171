package config

import (
	"math"
	"slices"
	"strings"
	"time"
)

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

// MaxRetries is Retries.Max with its default (3, the seed's) applied.
func (r Retries) MaxRetries() int {
	if r.Max == nil {
		return 3
	}
	return *r.Max
}

func (r *Retries) applyDefaults() {
	setDefault(&r.Delay, 10*time.Minute)
	setDefault(&r.Backoff, 1)
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

// validateRetries checks a pipeline's retry policy, each step's override of it and the step
// deadlines.
func (p *Pipeline) validateRetries(at string) error {
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
	return nil
}
