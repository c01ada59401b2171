package fetcher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/secret"
	"github.com/sluice-etl/sluice/pkg/source"
)

// An available event is a claim: its URL must be the pipeline's source for its date. A crafted
// one naming a cloud metadata URL is refused, nothing is fetched and nothing lands.
func TestAvailableWithForeignURLIsRefused(t *testing.T) {
	e := setup(t)
	var hits int
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++; w.Write(csvBody) }))
	defer src.Close()
	e.p.Source.URL = src.URL + "/data/{ds}.csv"
	for _, url := range []string{
		"http://169.254.169.254/latest/meta-data/iam/security-credentials/",
		src.URL + "/data/2023-12-31.csv", // the source, but another date
	} {
		av := available(url)
		err := Claims(e.p, av)
		if err == nil || !strings.Contains(err.Error(), "is not the source of pipeline orders for 2024-01-01 ("+src.URL+"/data/2024-01-01.csv)") {
			t.Fatalf("claims of %s: %v", url, err)
		}
		if _, err := e.f.Handle(t.Context(), e.p, av); err == nil || !flow.IsPermanent(err) {
			t.Fatalf("handle %s: %v, want a permanent refusal", url, err)
		}
	}
	if hits != 0 {
		t.Fatalf("the source was fetched %d times", hits)
	}
	if _, ok := e.object(t, "raw/orders/2024-01-01.csv"); ok {
		t.Fatal("an object landed")
	}
	if err := Claims(e.p, available(src.URL+"/data/2024-01-01.csv")); err != nil {
		t.Fatalf("the configured source refused: %v", err)
	}
}

// viaSourceHost is a client whose transport reaches "source.test" (a name that resolves to no
// internal address, as a public source's would) at the test server's loopback address.
func viaSourceHost(srv *httptest.Server) *http.Client {
	addr := srv.Listener.Addr().String()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		if strings.HasPrefix(a, "source.test:") {
			a = addr
		}
		return (&net.Dialer{}).DialContext(ctx, network, a)
	}}
	return source.Client(time.Minute, tr)
}

// Redirects follow a policy: the same host, or a host of source.redirect_hosts, never to a
// loopback or private address from a source that is not on one, never from https to http. A
// refused redirect is permanent and names both URLs.
func TestRedirectPolicy(t *testing.T) {
	e := setup(t)
	var internalHits int
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { internalHits++; w.Write(csvBody) }))
	defer internal.Close()
	_, internalPort, _ := net.SplitHostPort(internal.Listener.Addr().String())
	mux := http.NewServeMux()
	mux.HandleFunc("/to-loopback.csv", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, internal.URL+"/secret.csv", http.StatusFound)
	})
	mux.HandleFunc("/to-same-host.csv", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/moved.csv", http.StatusMovedPermanently)
	})
	mux.HandleFunc("/moved.csv", func(w http.ResponseWriter, r *http.Request) { w.Write(csvBody) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	e.f = mustNew(t, viaSourceHost(srv), e.s3, e.bucket)
	base := "http://source.test:" + port

	l, err := e.fetch(t, base+"/to-same-host.csv")
	if err != nil {
		t.Fatalf("a redirect on the source's own host: %v", err)
	}
	e.wantLanded(t, l, csvBody)

	for _, allow := range [][]string{nil, {"127.0.0.1:" + internalPort}} {
		e.p.Source.RedirectHosts = allow
		_, err = e.fetch(t, base+"/to-loopback.csv")
		if err == nil || !flow.IsPermanent(err) || !errors.Is(err, source.ErrRedirect) {
			t.Fatalf("redirect to 127.0.0.1 (allowed hosts %v): %v, want a permanent refusal", allow, err)
		}
		if !strings.Contains(err.Error(), base+"/to-loopback.csv redirects to "+internal.URL+"/secret.csv") {
			t.Fatalf("refusal does not name both URLs: %v", err)
		}
	}
	if internalHits != 0 {
		t.Fatalf("the internal address was fetched %d times", internalHits)
	}
}

// Credentials travel as headers from secret references, and the URL the events, metadata and
// errors show has its token-like query parameters redacted.
func TestSourceHeadersAndRedactedURL(t *testing.T) {
	e := setup(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cr3t-token" || r.URL.Query().Get("api_key") != "k3y" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Write(csvBody)
	}))
	defer srv.Close()
	auth := secret.New("env:SOURCE_TOKEN")
	if err := auth.Resolve(func(string) (string, bool) { return "Bearer s3cr3t-token", true }); err != nil {
		t.Fatal(err)
	}
	e.p.Source.URL = srv.URL + "/{ds}.csv?api_key=k3y&fmt=csv"
	e.p.Source.Headers = map[string]secret.Value{"Authorization": auth}
	shown := source.Display(e.p, "2024-01-01", "")
	if strings.Contains(shown, "k3y") || !strings.Contains(shown, "api_key=REDACTED") || !strings.Contains(shown, "fmt=csv") {
		t.Fatalf("shown URL %s", shown)
	}
	out, err := e.f.Handle(t.Context(), e.p, available(shown))
	if err != nil {
		t.Fatal(err)
	}
	l := out
	if l.Object.SourceURL != shown {
		t.Fatalf("landed source_url %s, want %s", l.Object.SourceURL, shown)
	}
	e.wantLanded(t, l, csvBody)
	meta := e.f.head(t.Context(), l.Object.Key)
	if meta == nil || meta.source != shown {
		t.Fatalf("object metadata source = %+v", meta)
	}
	// An error on the way names the URL redacted too.
	srv.Close()
	if _, err := e.f.Handle(t.Context(), e.p, &event.Available{Run: available(shown).Run, URL: shown}); err == nil || strings.Contains(err.Error(), "k3y") {
		t.Fatalf("error with the source down: %v", err)
	}
}

// A gzip inside a gzip inside a gzip: source.max_bytes bounds the decoded bytes whatever the
// layers, so a small bomb fails at the limit and lands nothing.
func TestNestedGzipBombFailsAtMaxBytes(t *testing.T) {
	e := setup(t)
	big := []byte("order_id,customer_id,amount,updated_at\n" + strings.Repeat("1,10,1.00,2024-01-01T00:00:00Z\n", 8<<20/31))
	bomb := gz(gz(big))
	if len(bomb) > 64<<10 {
		t.Fatalf("bomb is %d bytes", len(bomb))
	}
	for _, path := range []string{"/file.csv.gz", "/encoded.csv.gz"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if path == "/encoded.csv.gz" {
				w.Header().Set("Content-Encoding", "gzip")
				w.Write(gz(bomb))
				return
			}
			w.Write(bomb)
		}))
		e.p.Source.MaxBytes = 64 << 10
		_, err := e.fetch(t, srv.URL+path)
		srv.Close()
		if err == nil || !flow.IsPermanent(err) || !strings.Contains(err.Error(), fmt.Sprintf("larger than source.max_bytes (%d bytes)", 64<<10)) {
			t.Fatalf("%s: %v, want the max_bytes refusal", path, err)
		}
		if _, ok := e.object(t, "raw/orders/2024-01-01.csv"); ok {
			t.Fatalf("%s: an object landed", path)
		}
	}
}
