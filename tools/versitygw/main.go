// Command versitygw is versitygw (github.com/versity/versitygw) built with only the posix
// backend: the S3 server that `make demo` and `make test` run on 127.0.0.1. Upstream's
// cmd/versitygw links every backend (Azure, S3 proxy, ScoutFS, plugins), the IAM clients and its
// integration-test suite; a cold build of it takes about three times the CPU of this one (see
// docs/design.md, "The local S3 server"). The S3 API, the posix backend and their defaults are
// upstream's own: this file only parses the arguments scripts/s3.sh passes, with the same names
// and defaults as upstream's `versitygw --port ADDR posix DIR`, credentials from ROOT_ACCESS_KEY
// and ROOT_SECRET_KEY.
package main

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"syscall"

	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/embedgw"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "versitygw:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	flags := flag.NewFlagSet("versitygw", flag.ContinueOnError)
	port := flags.String("port", ":7070", "listen address (host:port)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() != 2 || flags.Arg(0) != "posix" {
		return fmt.Errorf("usage: versitygw [--port ADDR] posix DIR (only the posix backend is built)")
	}
	root := flags.Arg(1)
	if err := (meta.XattrMeta{}).Test(root); err != nil {
		return fmt.Errorf("xattr check failed: %w", err)
	}
	opts := posix.PosixOpts{Concurrency: 5000, IOBufferSize: 1 << 20, CopyObjectThreshold: 5 << 30}
	opts.SetNewDirPerm(fs.FileMode(0o755))
	opts.SetNewFilePerm(fs.FileMode(0o644))
	be, err := posix.New(root, meta.XattrMeta{}, opts)
	if err != nil {
		return fmt.Errorf("init posix backend: %w", err)
	}
	return embedgw.RunVersityGW(ctx, be, &embedgw.Config{
		RootUserAccess:      os.Getenv("ROOT_ACCESS_KEY"),
		RootUserSecret:      os.Getenv("ROOT_SECRET_KEY"),
		Ports:               []string{*port},
		MaxConnections:      250000,
		MaxRequests:         100000,
		AdminMaxConnections: 250000,
		AdminMaxRequests:    100000,
		MultipartMaxParts:   10000,
		IAMCacheTTL:         120,
		IAMCachePrune:       3600,
	})
}
