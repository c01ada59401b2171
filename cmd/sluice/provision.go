package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-etl/sluice/cmd/sluice/internal/embedded"
	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/services/dbtrunner"
	"github.com/sluice-etl/sluice/services/partitioner"
	"github.com/sluice-etl/sluice/services/validator"
)

// pgRoles are the roles deploy/postgres/roles.sql creates, with the variable holding each one's
// password for `sluice provision` to set.
var pgRoles = []struct{ name, passwordVar string }{
	{"sluice_loader", "SLUICE_PG_LOADER_PASSWORD"},
	{"sluice_partitioner", "SLUICE_PG_PARTITIONER_PASSWORD"},
	{"sluice_dbt", "SLUICE_PG_DBT_PASSWORD"},
	{"sluice_reader", "SLUICE_PG_READER_PASSWORD"},
}

// provisionCmd creates or updates, idempotently and with the admin credentials of the config,
// what the services only bind to: the events stream, the KV buckets and every durable consumer
// on NATS, and the fences, staging and target tables (with their owners and grants) in
// PostgreSQL.
type provisionCmd struct {
	Config     string `default:"sluice.yaml" placeholder:"FILE" help:"config file (with the admin's NATS credentials and database URL)"`
	NATS       string `name:"nats" placeholder:"URL" help:"NATS URL (overrides nats.url; without either, the embedded server's store in nats.data_dir)"`
	Roles      string `placeholder:"FILE" help:"apply this roles script first (deploy/postgres/roles.sql)"`
	NoNATS     bool   `name:"no-nats" help:"leave NATS alone"`
	NoPostgres bool   `name:"no-postgres" help:"leave PostgreSQL alone"`
}

func (c *provisionCmd) run(ctx context.Context, stdout, stderr io.Writer) error {
	cfg, err := config.Load(c.Config, os.LookupEnv)
	if err != nil {
		return err
	}
	log := telemetry.Redact(telemetry.Logger(stderr, slog.LevelInfo), cfg.Secrets())
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if !c.NoNATS {
		if err := provisionNATS(ctx, cfg, c.NATS, log); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "nats: stream %s, %d KV buckets, %d consumers\n", cfg.NATS.Stream, len(bus.Buckets()), len(bus.Consumers(app.BusOptions(cfg))))
	}
	if !c.NoPostgres {
		msg, err := provisionPostgres(ctx, cfg, c.Roles, os.LookupEnv)
		if err != nil {
			return fmt.Errorf("provision postgres (%s): %s", cfg.Postgres.URL, telemetry.RedactString(err.Error(), cfg.Secrets()))
		}
		fmt.Fprintln(stdout, "postgres: "+msg)
	}
	return nil
}

func provisionNATS(ctx context.Context, cfg *config.Config, url string, log *slog.Logger) error {
	if url == "" {
		url = cfg.NATS.URL.Reveal()
	}
	if url == "" {
		ns, err := embedded.Start(cfg.Path(cfg.NATS.DataDir), cfg.NATS.Listen)
		if err != nil {
			return err
		}
		defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
		url = ns.ClientURL()
	}
	co := bus.ConnectOptions{Name: "sluice-provision", Who: "sluice provision", Auth: app.NATSAuth(cfg)}
	if u := cfg.NATS.User.Reveal(); u != "" {
		co.Inbox = "_INBOX_" + u
	}
	conn, err := bus.Connect(url, co, log)
	if err != nil {
		return err
	}
	defer conn.NC.Close()
	errc := make(chan error, 1)
	go func() { errc <- bus.Provision(ctx, conn.JS, app.BusOptions(cfg)) }()
	select {
	case err := <-errc:
		return err
	case err := <-conn.Refused:
		return err
	}
}

// provisionPostgres applies the roles script (when given), sets the roles' passwords from their
// variables, and creates the fences, staging and target tables with their owners and grants.
func provisionPostgres(ctx context.Context, cfg *config.Config, rolesFile string, lookup func(string) (string, bool)) (string, error) {
	conn, err := pgx.Connect(ctx, cfg.Postgres.URL.Reveal())
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	haveRoles, passwords, err := provisionRoles(ctx, conn, rolesFile, lookup)
	if err != nil {
		return "", err
	}
	contracts, err := contract.ForPipelines(cfg.Pipelines, cfg.Dir)
	if err != nil {
		return "", err
	}
	pool, err := app.PostgresPool(ctx, cfg)
	if err != nil {
		return "", err
	}
	defer pool.Close()
	// The staging tables and sluice_fences, exactly as the validator makes them.
	v, err := validator.New(pool, nil, nil)
	if err != nil {
		return "", err
	}
	if err := v.Prepare(ctx, cfg.Pipelines, contracts); err != nil {
		return "", err
	}
	// Where the upsert statement records its counts (the dbt-runner reads them after dbt).
	if err := dbtrunner.EnsureCounts(ctx, pool); err != nil {
		return "", err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	for _, p := range cfg.Pipelines {
		if err := provisionTarget(ctx, tx, p, contracts[p.Name], haveRoles); err != nil {
			return "", err
		}
	}
	if haveRoles {
		if err := execAll(ctx, tx, "", []string{
			"GRANT SELECT, INSERT, UPDATE ON sluice_fences TO sluice_loader, sluice_partitioner, sluice_dbt",
			"GRANT SELECT ON sluice_fences TO sluice_reader",
			"GRANT SELECT, INSERT, DELETE ON sluice_upsert_counts TO sluice_dbt",
			"GRANT SELECT ON sluice_upsert_counts TO sluice_reader",
		}); err != nil {
			return "", err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return "", err
	}
	msg := fmt.Sprintf("sluice_fences, sluice_upsert_counts and the staging and target tables of %d pipelines", len(cfg.Pipelines))
	if !haveRoles {
		return msg + "; no sluice roles (apply deploy/postgres/roles.sql with --roles for least privilege)", nil
	}
	return fmt.Sprintf("%s, owned and granted to the sluice roles (%d passwords set)", msg, passwords), nil
}

// provisionRoles applies the roles script (when given), says whether every sluice role exists,
// and then sets the password of each whose variable is set.
func provisionRoles(ctx context.Context, conn *pgx.Conn, rolesFile string, lookup func(string) (string, bool)) (haveRoles bool, passwords int, err error) {
	if rolesFile != "" {
		script, err := os.ReadFile(rolesFile)
		if err != nil {
			return false, 0, err
		}
		if _, err := conn.Exec(ctx, string(script)); err != nil {
			return false, 0, fmt.Errorf("%s: %w", rolesFile, err)
		}
	}
	if err := conn.QueryRow(ctx, "SELECT count(*) = $1 FROM pg_roles WHERE rolname = ANY($2)", len(pgRoles), roleNames()).Scan(&haveRoles); err != nil {
		return false, 0, err
	}
	for _, r := range pgRoles {
		pw, ok := lookup(r.passwordVar)
		if !ok || !haveRoles {
			continue
		}
		// ALTER ROLE takes no parameters: the server quotes the literal (format %L).
		var stmt string
		if err := conn.QueryRow(ctx, "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)", r.name, pw).Scan(&stmt); err != nil {
			return false, 0, err
		}
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return false, 0, fmt.Errorf("set the password of %s: %w", r.name, err)
		}
		passwords++
	}
	return haveRoles, passwords, nil
}

// provisionTarget creates a pipeline's target table and key index and, when the sluice roles
// exist, gives them their grants and the partitioner the ownership of its partitions.
func provisionTarget(ctx context.Context, tx pgx.Tx, p config.Pipeline, c *contract.Contract, haveRoles bool) error {
	where := "pipeline " + p.Name + ": "
	if err := execAll(ctx, tx, where, []string{partitioner.TargetDDL(c, p.Target), partitioner.KeyIndexDDL(c, p.Target)}); err != nil {
		return err
	}
	if !haveRoles {
		return nil
	}
	if err := execAll(ctx, tx, where, grants(p)); err != nil {
		return err
	}
	// Partitions made before (by the admin, or before the roles existed) change owner too:
	// only the owner may detach and drop them.
	rows, err := tx.Query(ctx, `SELECT format('ALTER TABLE %I.%I OWNER TO sluice_partitioner', n.nspname, c.relname)
		FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE i.inhparent = to_regclass($1)`, pgx.Identifier{p.Target.Schema, p.Target.Table}.Sanitize())
	if err != nil {
		return err
	}
	stmts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	return execAll(ctx, tx, where, stmts)
}

// execAll runs the statements in order; an error names where (a prefix) and the statement.
func execAll(ctx context.Context, tx pgx.Tx, where string, stmts []string) error {
	for _, stmt := range stmts {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s%s: %w", where, stmt, err)
		}
	}
	return nil
}

func roleNames() []string {
	out := make([]string, len(pgRoles))
	for i, r := range pgRoles {
		out[i] = r.name
	}
	return out
}

// grants gives each role what its step needs on one pipeline's tables, and nothing else.
func grants(p config.Pipeline) []string {
	schema := pgx.Identifier{p.Target.Schema}.Sanitize()
	staging := pgx.Identifier{p.Target.Schema, p.StagingTable}.Sanitize()
	target := pgx.Identifier{p.Target.Schema, p.Target.Table}.Sanitize()
	return []string{
		"GRANT USAGE ON SCHEMA " + schema + " TO sluice_loader, sluice_partitioner, sluice_dbt, sluice_reader",
		// The partitioner creates partitions; dbt creates its staging view and its relations.
		"GRANT CREATE ON SCHEMA " + schema + " TO sluice_partitioner, sluice_dbt",
		// The validator replaces a ds slice: DELETE, then COPY (INSERT). No TRUNCATE, no DDL.
		"GRANT SELECT, INSERT, DELETE ON " + staging + " TO sluice_loader",
		"GRANT SELECT ON " + staging + " TO sluice_dbt, sluice_reader",
		// Only the owner of a partitioned table may attach, detach and drop its partitions.
		"ALTER TABLE " + target + " OWNER TO sluice_partitioner",
		"GRANT SELECT, INSERT, UPDATE, DELETE ON " + target + " TO sluice_dbt",
		"GRANT SELECT ON " + target + " TO sluice_reader",
		// What dbt builds (the staging view) is readable by the read-only role.
		"ALTER DEFAULT PRIVILEGES FOR ROLE sluice_dbt IN SCHEMA " + schema + " GRANT SELECT ON TABLES TO sluice_reader",
	}
}

// natsCmd runs the embedded JetStream server alone, provisioned, until interrupted: the broker
// for single-service binaries on one machine (`sluice-fetcher --nats nats://<nats.listen>`),
// which embed none.
type natsCmd struct {
	Config string `default:"sluice.yaml" placeholder:"FILE" help:"config file (nats.listen, nats.data_dir)"`
}

func (c *natsCmd) run(ctx context.Context, _, stderr io.Writer) error {
	cfg, err := config.Load(c.Config, os.LookupEnv)
	if err != nil {
		return err
	}
	log := telemetry.Redact(telemetry.Logger(stderr, slog.LevelInfo), cfg.Secrets())
	ns, err := embedded.Start(cfg.Path(cfg.NATS.DataDir), cfg.NATS.Listen)
	if err != nil {
		return err
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	conn, err := bus.Connect(ns.ClientURL(), bus.ConnectOptions{Name: "sluice-nats", Who: "sluice nats"}, log)
	if err != nil {
		return err
	}
	err = bus.Provision(ctx, conn.JS, app.BusOptions(cfg))
	conn.NC.Close()
	if err != nil {
		return err
	}
	log.Info("sluice nats: embedded JetStream server provisioned and serving", "url", ns.ClientURL(), "store", cfg.Path(cfg.NATS.DataDir))
	<-ctx.Done()
	return nil
}
