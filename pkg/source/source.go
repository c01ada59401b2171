// Package source is how the sensor and the fetcher reach a pipeline's source over HTTP: the
// request is built from the pipeline's config alone (its URL template and the parsed ds, its
// headers from secret references), redirects follow a policy instead of Go's default, and the
// URL is shown (in events, S3 metadata, logs, alerts and spans) with its credentials redacted.
package source

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// URL is the source URL of p for ds: the configured template with the parsed date, never
// anything an event says. It may hold credentials in its query: show it with Redact.
func URL(p *config.Pipeline, ds, runID string) string {
	return config.Expand(p.Source.URL, p.Name, ds, runID)
}

// Display is URL as it may be shown and carried in events.
func Display(p *config.Pipeline, ds, runID string) string { return Redact(URL(p, ds, runID)) }

// Redacted replaces credentials in shown URLs.
const Redacted = "REDACTED"

// secretParams are query parameter names (lowercase) whose values are credentials.
var secretParams = []string{"token", "access_token", "api_key", "apikey", "key", "secret", "password", "passwd",
	"pwd", "auth", "signature", "sig", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "client_secret", "code"}

// Redact returns u with its userinfo and the values of token-like query parameters replaced by
// REDACTED. Text that does not parse as a URL is redacted whole.
func Redact(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return Redacted
	}
	if pu.User != nil {
		pu.User = url.User(Redacted)
	}
	if pu.RawQuery != "" {
		q := pu.Query()
		changed := false
		for name := range q {
			if secretParam(name) {
				q[name] = []string{Redacted}
				changed = true
			}
		}
		if changed {
			pu.RawQuery = q.Encode()
		}
	}
	return pu.String()
}

func secretParam(name string) bool {
	n := strings.ToLower(name)
	if slices.Contains(secretParams, n) {
		return true
	}
	for _, part := range []string{"token", "secret", "password", "apikey", "api_key", "signature"} {
		if strings.Contains(n, part) {
			return true
		}
	}
	return false
}

// NewRequest is a request for p's file of ds, with the pipeline's headers and its redirect
// policy. Errors from Do never show the URL unredacted.
func NewRequest(ctx context.Context, p *config.Pipeline, method, ds, runID string) (*http.Request, error) {
	u := URL(p, ds, runID)
	pol, err := newPolicy(ctx, u, p.Source.RedirectHosts)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(context.WithValue(ctx, policyKey{}, pol), method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("source of %s: %s", p.Name, redactErr(err))
	}
	for name, v := range p.Source.Headers {
		req.Header.Set(name, v.Reveal())
	}
	return req, nil
}

// Do sends req with c, redacting the URL in any error.
func Do(c *http.Client, req *http.Request) (*http.Response, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, redactErr(err)
	}
	return resp, nil
}

// ErrRedirect is a redirect the policy refuses; it can never succeed on a retry.
var ErrRedirect = errors.New("redirect refused")

func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		inner := ue.Err
		if errors.Is(inner, ErrRedirect) {
			return inner // names both URLs, redacted
		}
		return &url.Error{Op: ue.Op, URL: Redact(ue.URL), Err: inner}
	}
	return err
}

// Client is the HTTP client for sources: traced, URLs redacted on spans, redirects checked by
// the policy NewRequest attached. A nil base is http.DefaultTransport.
func Client(timeout time.Duration, base http.RoundTripper) *http.Client {
	if base == nil {
		base = http.DefaultTransport
	}
	return &http.Client{
		Timeout:       timeout,
		Transport:     telemetry.HTTPTransport(redactSpan{base}),
		CheckRedirect: checkRedirect,
	}
}

// redactSpan runs inside the traced transport: it overwrites the span's url.full (which
// otelhttp records with the query as it is) with the redacted URL.
type redactSpan struct{ next http.RoundTripper }

func (t redactSpan) RoundTrip(r *http.Request) (*http.Response, error) {
	if s := trace.SpanFromContext(r.Context()); s.IsRecording() {
		s.SetAttributes(attribute.String("url.full", Redact(r.URL.String())))
	}
	return t.next.RoundTrip(r)
}

type policyKey struct{}

// policy is the redirect policy of one request: the source's host, whether the source itself
// is on a loopback, link-local or private address, and the hosts a redirect may also go to.
type policy struct {
	origin  *url.URL
	private bool
	allowed []string
}

func newPolicy(ctx context.Context, u string, allowed []string) (*policy, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return nil, fmt.Errorf("source url: %s", redactErr(err))
	}
	return &policy{origin: pu, private: internal(ctx, pu.Hostname()), allowed: allowed}, nil
}

// MaxRedirects bounds a redirect chain.
const MaxRedirects = 5

// checkRedirect allows a redirect only to the source's own host or a host of
// source.redirect_hosts, never from https to http, and never to a loopback, link-local or
// private address unless the source itself is on one.
func checkRedirect(req *http.Request, via []*http.Request) error {
	pol, _ := req.Context().Value(policyKey{}).(*policy)
	from := via[len(via)-1].URL
	refuse := func(why string) error {
		return fmt.Errorf("%w: %s redirects to %s, %s", ErrRedirect, Redact(from.String()), Redact(req.URL.String()), why)
	}
	if pol == nil {
		return refuse("and this client follows no redirect outside a source request")
	}
	if len(via) > MaxRedirects {
		return refuse(fmt.Sprintf("after %d redirects", MaxRedirects))
	}
	if from.Scheme == "https" && req.URL.Scheme != "https" {
		return refuse("from https to " + req.URL.Scheme)
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return refuse("which is not http(s)")
	}
	if !sameHost(pol.origin, req.URL) && !pol.allows(req.URL) {
		return refuse(fmt.Sprintf("another host than the source's (%s) and not in source.redirect_hosts", pol.origin.Host))
	}
	if !pol.private && internal(req.Context(), req.URL.Hostname()) {
		return refuse("a loopback, link-local or private address, and the source is not on one")
	}
	return nil
}

func (p *policy) allows(u *url.URL) bool {
	for _, h := range p.allowed {
		if strings.EqualFold(h, u.Host) || strings.EqualFold(h, u.Hostname()) && !strings.Contains(h, ":") {
			return true
		}
	}
	return false
}

func sameHost(a, b *url.URL) bool {
	return strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// internal reports whether host is, or resolves to, a loopback, link-local, private or
// unspecified address. A name that does not resolve is not internal (the request fails anyway).
func internal(ctx context.Context, host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return internalAddr(a)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if internalAddr(a) {
			return true
		}
	}
	return false
}

func internalAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsPrivate() || a.IsUnspecified() ||
		// 100.64.0.0/10 (carrier-grade NAT) and fd00:ec2::254-style metadata addresses are covered by
		// IsPrivate for ULAs; shared address space is not, so check it.
		netip.MustParsePrefix("100.64.0.0/10").Contains(a)
}
