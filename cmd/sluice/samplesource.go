package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/sluice-etl/sluice/pkg/samplesource"
)

// cmdSampleSource serves synthetic daily orders at /data/<ds>.csv (or a directory of CSV files)
// and synthetic events at /events/<ds>.csv over HTTP.
func cmdSampleSource(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sample-source", args, stdout, stderr)
	addr := fs.String("addr", "127.0.0.1:8081", "listen address")
	var o samplesource.Options
	fs.IntVar(&o.Rows, "rows", 1000, "new orders (and new events) per date")
	fs.Float64Var(&o.UpdateRatio, "update-ratio", 0.1, "share of the previous date's orders (and events) updated on each date")
	fs.StringVar(&o.Dir, "dir", "", "serve <dir>/<ds>.csv at /data/ instead of generated orders")
	fs.DurationVar(&o.Delay, "delay", 0, "a date becomes available this long after its first request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	h, err := samplesource.Handler(o)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "sample source on http://%s/data/{ds}.csv\n", ln.Addr())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Shutdown(context.Background()) }()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
