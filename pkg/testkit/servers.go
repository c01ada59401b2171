// The real servers `make test` starts (a throwaway PostgreSQL cluster, versitygw for S3, dbt in
// the project virtualenv): each test gets its own database and bucket. A test run without them
// fails and names the make target that provides them.

package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/objstore"
	"github.com/sluice-etl/sluice/pkg/secret"
)

func need(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run the tests with `make test`, which starts PostgreSQL, versitygw and dbt for them", name)
	}
	return v
}

func suffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Postgres creates a fresh database on the test cluster and returns its URL; it is dropped after.
func Postgres(t testing.TB) string {
	t.Helper()
	admin := need(t, "SLUICE_TEST_DATABASE_URL")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("connect to test PostgreSQL (make test starts it): %v", err)
	}
	defer conn.Close(ctx)
	name := "t_" + suffix()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, admin); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	return strings.Replace(admin, "/postgres?", "/"+name+"?", 1)
}

// S3 returns the config of a fresh bucket on the test S3 server, resolved and ready to use.
func S3(t testing.TB) config.S3 {
	t.Helper()
	cfg := config.S3{
		Endpoint:  secret.New("env:SLUICE_TEST_S3_ENDPOINT"),
		Region:    "us-east-1",
		Bucket:    "t-" + suffix(),
		AccessKey: secret.New("env:SLUICE_S3_ACCESS_KEY"),
		SecretKey: secret.New("env:SLUICE_S3_SECRET_KEY"),
		PathStyle: true,
	}
	for _, name := range []string{"SLUICE_TEST_S3_ENDPOINT", "SLUICE_S3_ACCESS_KEY", "SLUICE_S3_SECRET_KEY"} {
		need(t, name)
	}
	for _, v := range []*secret.Value{&cfg.Endpoint, &cfg.AccessKey, &cfg.SecretKey} {
		if err := v.Resolve(os.LookupEnv); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := objstore.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := objstore.EnsureBucket(ctx, c, cfg.Bucket); err != nil {
		t.Fatalf("test S3 server (make test starts versitygw): %v", err)
	}
	return cfg
}

// DBT returns the path of the dbt executable in the project virtualenv.
func DBT(t testing.TB) string {
	t.Helper()
	p := need(t, "SLUICE_TEST_DBT")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("dbt not found at %s: run `make tools`", p)
	}
	return p
}

// RepoRoot returns the repository root (from SLUICE_ROOT, set by make test).
func RepoRoot(t testing.TB) string {
	t.Helper()
	return need(t, "SLUICE_ROOT")
}
