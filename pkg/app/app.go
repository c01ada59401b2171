// Package app wires sluice services to their shared dependencies: the broker (embedded or
// external), the router, PostgreSQL and S3 clients (traced), telemetry (traces, metrics,
// OpenLineage), and the /healthz, /readyz, /metrics and /docs/ endpoints. One process can run one service (a Kubernetes Deployment) or all six (`sluice up`).
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/lineage"
	"github.com/sluice-etl/sluice/pkg/logstream"
	"github.com/sluice-etl/sluice/pkg/metrics"
	"github.com/sluice-etl/sluice/pkg/objstore"
	"github.com/sluice-etl/sluice/pkg/secret"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// Service builds one service's routes from the shared dependencies.
type Service struct {
	Name   string
	Routes func(ctx context.Context, d *Deps) ([]flow.Route, error)
}

// Deps are the shared dependencies a service may use; clients open on first use.
type Deps struct {
	Config   *config.Config
	Log      *slog.Logger
	NC       *nats.Conn
	JS       jetstream.JetStream
	Router   *flow.Router
	Tracer   *sdktrace.TracerProvider
	Registry *prometheus.Registry
	// Metrics are sluice's series, registered on Registry.
	Metrics *metrics.Metrics

	// service names the only service of a single-service stack, whose Log already says so.
	service string

	mu       sync.Mutex
	pool     *pgxpool.Pool
	s3       *s3.Client
	handlers []handler
	checks   []readyCheck
	onClose  []func()
	tracing  *telemetry.Tracing
	lineage  *lineage.Emitter
	logs     *logstream.Publisher
}

type handler struct {
	pattern string
	h       http.Handler
}

// Logger is the log of one service: Log with a "service" attribute, added once.
func (d *Deps) Logger(service string) *slog.Logger {
	if service == d.service {
		return d.Log
	}
	return d.Log.With("service", service)
}

// HandleHTTP mounts h at pattern (http.ServeMux syntax) on the process's HTTP endpoint, next to
// /metrics, when the process serves one. Services call it from Routes (the sensor's webhook).
func (d *Deps) HandleHTTP(pattern string, h http.Handler) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.handlers = append(d.handlers, handler{pattern, h})
}

// OnClose registers f to run when the stack stops, after its routes have stopped and before the
// database pool and the broker connection close (the dbt-runner stops its worker there).
func (d *Deps) OnClose(f func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.onClose = append(d.onClose, f)
}

// Postgres returns the shared connection pool.
func (d *Deps) Postgres(ctx context.Context) (*pgxpool.Pool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pool != nil {
		return d.pool, nil
	}
	pool, err := PostgresPool(ctx, d.Config)
	if err != nil {
		return nil, err
	}
	d.pool = pool
	return pool, nil
}

// PostgresPool opens a pool on postgres.url whose statements are spans of the run they serve.
// Errors name the URL's reference, never the URL.
func PostgresPool(ctx context.Context, cfg *config.Config) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.Postgres.URL.Reveal())
	if err != nil {
		// pgx errors can echo the URL; report the reference instead.
		return nil, fmt.Errorf("postgres (%s): invalid connection settings", cfg.Postgres.URL)
	}
	pcfg.ConnConfig.Tracer = telemetry.PgxTracer{} // a span per statement and COPY of a run
	timeout := cfg.ConnectTimeout
	pcfg.ConnConfig.ConnectTimeout = timeout // every connection the pool opens, not only the first
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres (%s): invalid connection settings", cfg.Postgres.URL)
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		if (pctx.Err() != nil || errors.Is(err, context.DeadlineExceeded)) && ctx.Err() == nil {
			return nil, fmt.Errorf("postgres (%s): no answer within %s (connect_timeout)", cfg.Postgres.URL, timeout)
		}
		return nil, fmt.Errorf("postgres (%s): %w", cfg.Postgres.URL, err)
	}
	return pool, nil
}

// S3 returns the shared S3 client, creating the bucket if it is missing.
func (d *Deps) S3(ctx context.Context) (*s3.Client, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.s3 != nil {
		return d.s3, nil
	}
	c, err := objstore.New(ctx, d.Config.S3, func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, telemetry.S3Tracing) // a span per S3 operation of a run
	})
	if err != nil {
		return nil, err
	}
	timeout := d.Config.ConnectTimeout
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := objstore.EnsureBucket(sctx, c, d.Config.S3.Bucket); err != nil {
		if (sctx.Err() != nil || errors.Is(err, context.DeadlineExceeded)) && ctx.Err() == nil {
			return nil, fmt.Errorf("s3 (bucket %s): no answer within %s (connect_timeout)", d.Config.S3.Bucket, timeout)
		}
		return nil, err
	}
	d.s3 = c
	return c, nil
}

// NATSAuth is the NATS identity the config gives (resolved secret references).
func NATSAuth(cfg *config.Config) bus.Auth {
	n := cfg.NATS
	a := bus.Auth{User: n.User.Reveal(), Password: n.Password.Reveal(), Creds: n.Creds.Reveal(), NKeySeed: n.NKey.Reveal()}
	if n.TLS != nil {
		a.TLSCA, a.TLSCert, a.TLSKey = cfg.Path(n.TLS.CA), cfg.Path(n.TLS.Cert), cfg.Path(n.TLS.Key)
	}
	return a
}

// BusOptions are the broker options from config.
func BusOptions(cfg *config.Config) bus.Options {
	return bus.Options{Stream: cfg.NATS.Stream, SubjectPrefix: cfg.NATS.SubjectPrefix, Replicas: cfg.NATS.Replicas,
		Logs: logstream.Limits{MaxAge: cfg.Console.Logs.MaxAge, MaxBytes: cfg.Console.Logs.MaxBytes}}
}

// EmbeddedServer is a NATS server running inside the process (the sluice CLI's; see Options.Embed).
type EmbeddedServer interface {
	ClientURL() string
	Shutdown()
	WaitForShutdown()
}

// Options choose how a process connects and what it serves.
type Options struct {
	// NATSURL overrides the config's nats.url.
	NATSURL string
	// Embed starts a NATS server in this process when neither NATSURL nor nats.url is set;
	// only the sluice CLI has one (cmd/sluice/internal/embedded), so a service binary without
	// a NATS URL fails at start. A process on its own embedded server provisions it.
	Embed func(dir, listen string) (EmbeddedServer, error)
	// Provision creates the stream, buckets and consumers at start against an external server
	// too (it needs admin credentials); services normally bind to what `sluice provision` made.
	Provision bool
	// Identity names a process that runs no single service (the console, the CLI) to NATS: its
	// inbox prefix is _INBOX_<Identity>. Default: the service's name for a single-service
	// process, else nats.user; with neither, _INBOX.
	Identity string
	// HTTPAddr serves /healthz, /readyz and /metrics when set.
	HTTPAddr string
	// NoRouter connects without consuming (CLI commands that only publish or read).
	NoRouter bool
	// Env reads the OTEL_* variables that configure trace export (main passes os.LookupEnv);
	// nil exports no traces.
	Env func(string) (string, bool)
}

// Stack is a running process: broker connection (and embedded server), router, HTTP endpoint.
type Stack struct {
	*Deps
	server EmbeddedServer
	http   *http.Server
	addr   string
	done   chan error
	ready  chan struct{}
}

// HTTPAddr is the address the HTTP endpoint listens on ("" without one); with Options.HTTPAddr
// "127.0.0.1:0" it tells which port was picked.
func (s *Stack) HTTPAddr() string { return s.addr }

// Start connects (starting the embedded server when no URL is configured), provisions the
// broker, builds every service's routes and starts consuming until ctx is cancelled.
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger, o Options, services ...Service) (*Stack, error) {
	st := &Stack{done: make(chan error, 1), ready: make(chan struct{})}
	log = telemetry.Redact(log, cfg.Secrets())
	single := ""
	if len(services) == 1 {
		single = services[0].Name
	}
	conn, name, provision, err := st.connect(ctx, cfg, log, o, services)
	if err != nil {
		return nil, err
	}
	log, logs := logger(log, conn.NC, cfg, single)
	st.Deps = &Deps{Config: cfg, Log: log, NC: conn.NC, JS: conn.JS, Registry: prometheus.NewRegistry(), service: single, logs: logs}
	// Until the stack has started, a subject the server refuses this user ends the start at
	// once with that subject, instead of a request that hangs until its timeout.
	var refused error
	started := make(chan struct{})
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		select {
		case refused = <-conn.Refused:
			conn.NC.Close()
		case <-started:
		}
	}()
	routes, err := st.build(ctx, o, name, provision, services)
	close(started)
	<-watchDone
	if refused != nil || err != nil {
		st.close()
		if refused != nil {
			return nil, refused
		}
		return nil, err
	}
	if o.NoRouter || len(routes) == 0 {
		close(st.ready)
		go func() { <-ctx.Done(); st.close(); st.done <- nil }()
		return st, nil
	}
	go func() {
		close(st.ready)
		err := st.Router.Run(ctx, routes...)
		st.close()
		st.done <- err
	}()
	return st, nil
}

// connect connects to the configured broker, or starts the embedded one when no URL is given (it
// is then provisioned here: nobody else does), and checks that the user may do what the services
// need. It returns the connection's name (sluice-<service>...) and whether to provision.
func (st *Stack) connect(ctx context.Context, cfg *config.Config, log *slog.Logger, o Options, services []Service) (*bus.Conn, string, bool, error) {
	url := o.NATSURL
	if url == "" {
		url = cfg.NATS.URL.Reveal()
	}
	provision := o.Provision
	if url == "" {
		if o.Embed == nil {
			return nil, "", false, errors.New("no NATS server: set nats.url in the config or pass --nats (only the sluice CLI embeds a server)")
		}
		ns, err := o.Embed(cfg.Path(cfg.NATS.DataDir), cfg.NATS.Listen)
		if err != nil {
			return nil, "", false, err
		}
		st.server = ns
		url = ns.ClientURL()
		provision = true // its own world: nobody else provisions it
		log.Info("embedded nats started", "url", url, "store", cfg.Path(cfg.NATS.DataDir))
	}
	name := "sluice"
	for _, s := range services {
		name += "-" + s.Name
	}
	who, identity := "sluice", o.Identity
	if len(services) == 1 {
		who, identity = services[0].Name, services[0].Name
	}
	if identity == "" {
		identity = cfg.NATS.User.Reveal()
	}
	co := bus.ConnectOptions{Name: name, Who: who, Auth: NATSAuth(cfg), Timeout: cfg.ConnectTimeout}
	if identity != "" {
		co.Inbox = "_INBOX_" + identity
	}
	conn, err := bus.Connect(url, co, log)
	if err != nil {
		st.shutdownServer()
		return nil, "", false, err
	}
	if st.server == nil && len(services) > 0 {
		// Fail now, naming the subject, if the user lacks a permission a service needs later.
		var needs []bus.Need
		names := make([]string, len(cfg.Pipelines))
		for i, p := range cfg.Pipelines {
			names[i] = p.Name
		}
		for _, s := range services {
			needs = append(needs, bus.Needs(s.Name, BusOptions(cfg), names, co.Inbox)...)
		}
		if err := conn.CheckPermissions(ctx, who, needs); errors.Is(err, bus.ErrCannotCheck) {
			log.Debug("nats permissions not checked at start", "err", err)
		} else if err != nil {
			conn.NC.Close()
			st.shutdownServer()
			return nil, "", false, err
		}
	}
	return conn, name, provision, nil
}

// logger is the process's logger: every record also goes to the log stream (after the same
// redaction), for the console; in a single-service process every line names the service.
func logger(log *slog.Logger, nc *nats.Conn, cfg *config.Config, single string) (*slog.Logger, *logstream.Publisher) {
	logs := logstream.NewPublisher(nc, cfg.NATS.SubjectPrefix, 0)
	pub := telemetry.Redact(slog.New(telemetry.WithRunContext(logs.Handler(slog.LevelInfo))), cfg.Secrets())
	log = slog.New(telemetry.Tee(log.Handler(), pub.Handler()))
	if single != "" {
		log = log.With("service", single)
	}
	return log, logs
}

// build sets up telemetry, provisions the broker when asked, makes the router and every service's
// routes, binds their consumers (a missing or refused one fails the start) and serves HTTP.
func (st *Stack) build(ctx context.Context, o Options, name string, provision bool, services []Service) ([]flow.Route, error) {
	cfg := st.Config
	st.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	routerOpts, err := st.observe(ctx, name, o.Env)
	if err != nil {
		return nil, err
	}
	if provision {
		if err := bus.Provision(ctx, st.JS, BusOptions(cfg)); err != nil {
			return nil, err
		}
	}
	routerOpts = append(routerOpts, flow.WithProvisionedConsumers())
	if st.Router, err = flow.NewRouter(ctx, st.JS, BusOptions(cfg), cfg.Pipelines, st.Tracer, st.Log, routerOpts...); err != nil {
		return nil, err
	}
	var routes []flow.Route
	for _, s := range services {
		rs, err := s.Routes(ctx, st.Deps)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", s.Name, err)
		}
		routes = append(routes, rs...)
	}
	if !o.NoRouter && len(routes) > 0 {
		if err := st.watch(ctx, routes); err != nil {
			return nil, err
		}
		if err := st.Router.Bind(ctx, routes...); err != nil {
			return nil, err
		}
	}
	if o.HTTPAddr != "" {
		if err := st.serveHTTP(o.HTTPAddr); err != nil {
			return nil, err
		}
	}
	return routes, nil
}

// Wait blocks until the stack has stopped (after its context is cancelled) and closed.
func (s *Stack) Wait() error { return <-s.done }

func (s *Stack) serveHTTP(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", s.serveReadyz)
	mux.Handle("/metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{}))
	mux.Handle("/docs/", s.docs())
	s.mu.Lock()
	for _, h := range s.handlers {
		mux.Handle(h.pattern, h.h)
	}
	s.mu.Unlock()
	s.addr = ln.Addr().String()
	// Every wait ends: a client that trickles its request or never reads the answer holds a
	// connection for at most these.
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	go func() { _ = s.http.Serve(ln) }()
	s.Log.Info("http endpoint", "addr", ln.Addr().String())
	return nil
}

// close shuts down in order: HTTP, database, telemetry, NATS, embedded server.
func (s *Stack) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.http != nil {
		_ = s.http.Shutdown(ctx)
	}
	if s.Deps != nil {
		s.mu.Lock()
		onClose := s.onClose
		s.onClose = nil
		s.mu.Unlock()
		for _, f := range onClose {
			f()
		}
		s.mu.Lock()
		if s.pool != nil {
			s.pool.Close()
		}
		s.mu.Unlock()
		s.closeObservability(ctx)
		s.logs.Close(ctx)
		_ = s.NC.Drain()
		for i := 0; i < 50 && !s.NC.IsClosed(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	s.shutdownServer()
}

func (s *Stack) shutdownServer() {
	if s.server != nil {
		s.server.Shutdown()
		s.server.WaitForShutdown()
	}
}

// Run is a single-service binary's main function: Main on the process's arguments, environment
// and stderr until SIGINT or SIGTERM; an error is printed, naming the binary, and exits 1.
func Run(svc Service) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := Main(ctx, os.Args[1:], os.LookupEnv, os.Stderr, svc)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sluice-"+svc.Name+":", err)
		os.Exit(1)
	}
}

// Main is the body of a single-service binary: flags, config, run until signalled.
func Main(ctx context.Context, args []string, lookup secret.Lookup, stderr io.Writer, svc Service) error {
	fs := flag.NewFlagSet("sluice-"+svc.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "sluice.yaml", "config file")
	natsURL := fs.String("nats", "", "NATS URL (overrides nats.url; credentials go in nats.user/password, creds or nkey, never the URL)")
	httpAddr := fs.String("http", ":8080", "address for /healthz, /readyz and /metrics")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath, lookup)
	if err != nil {
		return err
	}
	if *natsURL == "" && cfg.NATS.URL.Reveal() == "" {
		return fmt.Errorf("%s: no NATS server: set nats.url or pass --nats (a service binary embeds none; `sluice up` runs everything on an embedded one)", *cfgPath)
	}
	log := telemetry.Logger(stderr, slog.LevelInfo)
	st, err := Start(ctx, cfg, log, Options{NATSURL: *natsURL, HTTPAddr: *httpAddr, Env: lookup}, svc)
	if err != nil {
		return err
	}
	// Which server of a cluster this process talks to (of nats.url's list, the one it reached).
	st.Log.Info("started", "nats_server", st.NC.ConnectedServerName())
	err = st.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
