// Package console is sluice's web console: every pipeline and run at a glance, a run's timeline,
// counts, object, events and logs, SLA misses and alerts, and the CLI's actions (trigger, rerun,
// backfill, pause) behind a login. It reads only what the bus holds — the run-state, lease,
// schedule and alert buckets, the events stream and the log stream — renders HTML on the server
// (html/template, assets embedded) and pushes changes to open pages over server-sent events. It
// works without JavaScript for reading; the small script only swaps in fresh content when the
// server says something changed.
package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/dbtdocs"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Deps is what the console reads and acts through.
type Deps struct {
	Config *config.Config
	Log    *slog.Logger
	NC     *nats.Conn
	JS     jetstream.JetStream
	Tracer trace.TracerProvider
	// Docs opens the landing bucket to serve dbt docs; nil serves none.
	Docs func(ctx context.Context) (dbtdocs.Objects, error)
}

// FromApp takes the console's dependencies from a running stack.
func FromApp(d *app.Deps) Deps {
	return Deps{Config: d.Config, Log: d.Logger("console"), NC: d.NC, JS: d.JS, Tracer: d.Tracer,
		Docs: func(ctx context.Context) (dbtdocs.Objects, error) { return d.S3(ctx) }}
}

// Console serves the web console.
type Console struct {
	cfg      *config.Config
	log      *slog.Logger
	js       jetstream.JetStream
	nc       *nats.Conn
	req      *trigger.Requester
	runs     *cache
	hub      *hub
	tmpl     map[string]*template.Template
	key      []byte // signs sessions and CSRF tokens
	password []byte // nil: read-only
	posts    *postLog
	docs     http.Handler
	mux      *http.ServeMux
	now      func() time.Time
}

// New binds the console to the bus and starts following the run-state bucket and the log
// stream until ctx ends.
func New(ctx context.Context, d Deps) (*Console, error) {
	c := &Console{cfg: d.Config, log: d.Log, js: d.JS, nc: d.NC, hub: newHub(1000), posts: newPostLog(10000, time.Hour), now: time.Now}
	if pw := d.Config.Console.Password.Reveal(); pw != "" {
		c.password = []byte(pw)
		// Derived from the password, so sessions survive a restart and hold across replicas,
		// and changing the password logs everyone out.
		m := hmac.New(sha256.New, []byte("sluice-console-session-key"))
		m.Write(c.password)
		c.key = m.Sum(nil)
	} else {
		c.key = make([]byte, 32)
		_, _ = rand.Read(c.key)
	}
	var err error
	if c.tmpl, err = parseTemplates(); err != nil {
		return nil, err
	}
	if c.runs, err = newCache(ctx, d.JS, c.hub); err != nil {
		return nil, err
	}
	runs := c.runs.store
	c.req = trigger.New(d.JS, runs, d.Tracer, app.BusOptions(d.Config))
	if err := c.followLogs(ctx); err != nil {
		return nil, err
	}
	if d.Docs != nil {
		names := make([]string, len(d.Config.Pipelines))
		for i, p := range d.Config.Pipelines {
			names[i] = p.Name
		}
		c.docs = &dbtdocs.Handler{Bucket: d.Config.S3.Bucket, Pipelines: names, Objects: d.Docs, Latest: c.runs.latestCompleted}
	}
	c.routes()
	return c, nil
}

func (c *Console) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	m.Handle("GET /static/", http.StripPrefix("/static/", cacheable(http.FileServerFS(static))))
	m.HandleFunc("GET /{$}", c.pagePipelines)
	m.HandleFunc("GET /pipelines/{pipeline}", c.pageGrid)
	m.HandleFunc("GET /pipelines/{pipeline}/backfill", c.pageBackfill)
	m.HandleFunc("GET /runs/{pipeline}/{ds}", c.latestRun)
	m.HandleFunc("GET /runs/{pipeline}/{ds}/{run}", c.pageRun)
	m.HandleFunc("GET /runs/{pipeline}/{ds}/{run}/logs", c.pageLogs)
	m.HandleFunc("GET /sla", c.pageSLA)
	m.HandleFunc("GET /live", c.live)
	m.HandleFunc("GET /login", c.pageLogin)
	m.HandleFunc("POST /login", c.login)
	m.HandleFunc("POST /logout", c.logout)
	m.HandleFunc("GET /confirm/{action}", c.pageConfirm)
	m.HandleFunc("POST /actions/{action}", c.act)
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	if c.docs != nil {
		m.Handle("GET /docs/", c.docs)
	}
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { c.notFound(w, r, "no such page: "+r.URL.Path) })
	c.mux = m
}

// ServeHTTP serves the console.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'")
	// Taken before any handler reads the bus: see hub.seq.
	r = r.WithContext(context.WithValue(r.Context(), seqKey{}, c.hub.now()))
	c.mux.ServeHTTP(w, r)
}

// Serve listens on addr until ctx ends. The listener is returned through ready (its address
// when addr has port 0) before serving starts.
func (c *Console) Serve(ctx context.Context, addr string, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("console: listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: c, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	if ready != nil {
		ready(ln.Addr())
	}
	c.log.Info("console listening", "url", c.cfg.Console.URL, "addr", ln.Addr().String(), "read_only", c.password == nil)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		c.hub.close() // ends the live streams, which would hold Shutdown up
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

type seqKey struct{}

func cacheable(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		h.ServeHTTP(w, r)
	})
}
