package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

type runKey struct{}

type runInfo struct{ pipeline, ds, runID string }

// ContextWithRun returns ctx carrying a run, so every line logged with it names the run.
func ContextWithRun(ctx context.Context, pipeline, ds, runID string) context.Context {
	return context.WithValue(ctx, runKey{}, runInfo{pipeline: pipeline, ds: ds, runID: runID})
}

// contextHandler adds what the context knows (run, trace and span ids) to each record, unless the
// logger or the record already carries that key: a JSON object must not have a key twice.
type contextHandler struct {
	h    slog.Handler
	have []string // keys given to WithAttrs outside any group
	grp  bool
}

func (c *contextHandler) Enabled(ctx context.Context, l slog.Level) bool { return c.h.Enabled(ctx, l) }

func (c *contextHandler) Handle(ctx context.Context, r slog.Record) error {
	var add []slog.Attr
	put := func(k, v string) {
		if v == "" || slices.Contains(c.have, k) {
			return
		}
		dup := false
		r.Attrs(func(a slog.Attr) bool { dup = a.Key == k; return !dup })
		if !dup {
			add = append(add, slog.String(k, v))
		}
	}
	if ctx != nil && !c.grp {
		if ri, ok := ctx.Value(runKey{}).(runInfo); ok {
			put("pipeline", ri.pipeline)
			put("ds", ri.ds)
			put("run_id", ri.runID)
		}
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			put("trace_id", sc.TraceID().String())
			put("span_id", sc.SpanID().String())
		}
	}
	if len(add) > 0 {
		r = r.Clone()
		r.AddAttrs(add...)
	}
	return c.h.Handle(ctx, r)
}

func (c *contextHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	have := c.have
	if !c.grp {
		have = slices.Clone(c.have)
		for _, a := range attrs {
			have = append(have, a.Key)
		}
	}
	return &contextHandler{h: c.h.WithAttrs(attrs), have: have, grp: c.grp}
}

func (c *contextHandler) WithGroup(name string) slog.Handler {
	return &contextHandler{h: c.h.WithGroup(name), have: c.have, grp: true}
}

// Redacted is what a secret is replaced with in log lines.
const Redacted = "[REDACTED]"

// Redact returns a logger that replaces every occurrence of a secret value in messages and
// attribute values (strings, errors, anything formatted) with [REDACTED]. For a secret that is a
// URL with a password, the password alone is redacted too. Secrets shorter than 4 characters are
// ignored: replacing them everywhere would make the logs unreadable.
func Redact(log *slog.Logger, secrets []string) *slog.Logger {
	var pairs []string
	for _, s := range expandSecrets(secrets) {
		pairs = append(pairs, s, Redacted)
	}
	if len(pairs) == 0 {
		return log
	}
	return slog.New(&redactHandler{h: log.Handler(), r: strings.NewReplacer(pairs...)})
}

// expandSecrets adds the passwords of URL secrets and orders longer values first, so a value that
// contains another is replaced whole.
func expandSecrets(secrets []string) []string {
	var out []string
	for _, s := range secrets {
		out = append(out, s)
		if u, err := url.Parse(s); err == nil && u.User != nil {
			if pw, ok := u.User.Password(); ok {
				out = append(out, pw, url.QueryEscape(pw))
			}
		}
	}
	out = slices.DeleteFunc(out, func(s string) bool { return len(s) < 4 })
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(out)
}

// RedactString replaces the secrets (as Redact does) in s.
func RedactString(s string, secrets []string) string {
	for _, v := range expandSecrets(secrets) {
		s = strings.ReplaceAll(s, v, Redacted)
	}
	return s
}

type redactHandler struct {
	h slog.Handler
	r *strings.Replacer
}

func (h *redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }

func (h *redactHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, h.r.Replace(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.h.Handle(ctx, out)
}

func (h *redactHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = h.attr(a)
	}
	return &redactHandler{h: h.h.WithAttrs(clean), r: h.r}
}

func (h *redactHandler) WithGroup(name string) slog.Handler {
	return &redactHandler{h: h.h.WithGroup(name), r: h.r}
}

func (h *redactHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.Replace(v.String()))
	case slog.KindGroup:
		g := v.Group()
		clean := make([]any, len(g))
		for i, ga := range g {
			clean[i] = h.attr(ga)
		}
		return slog.Group(a.Key, clean...)
	case slog.KindAny:
		// Check what the JSON handler would write as well as the value's text: either may hold it.
		x := v.Any()
		text := fmt.Sprint(x)
		if err, ok := x.(error); ok {
			text = err.Error()
		}
		if clean := h.r.Replace(text); clean != text {
			return slog.String(a.Key, clean)
		}
		if b, err := json.Marshal(x); err == nil {
			if s := string(b); h.r.Replace(s) != s {
				return slog.String(a.Key, h.r.Replace(text))
			}
		}
		return slog.Attr{Key: a.Key, Value: v}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// WithRunContext wraps h so each record gets what the context knows (run, trace and span ids),
// as Logger's handler does.
func WithRunContext(h slog.Handler) slog.Handler { return &contextHandler{h: h} }

// Tee returns a handler that passes every record to each of hs (the ones enabled for its level).
func Tee(hs ...slog.Handler) slog.Handler { return teeHandler(hs) }

type teeHandler []slog.Handler

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range t {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	for _, h := range t {
		if h.Enabled(ctx, r.Level) {
			if err := h.Handle(ctx, r.Clone()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (t teeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithAttrs(attrs)
	}
	return out
}

func (t teeHandler) WithGroup(name string) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithGroup(name)
	}
	return out
}
