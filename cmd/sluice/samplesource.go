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

// sampleSourceCmd serves synthetic daily orders at /data/<ds>.csv (or a directory of CSV files)
// and synthetic events at /events/<ds>.csv over HTTP.
type sampleSourceCmd struct {
	Addr        string        `default:"127.0.0.1:8081" placeholder:"HOST:PORT" help:"listen address"`
	Rows        int           `default:"1000" placeholder:"N" help:"new orders (and new events) per date"`
	UpdateRatio float64       `name:"update-ratio" default:"0.1" placeholder:"R" help:"share of the previous date's orders (and events) updated on each date"`
	Dir         string        `placeholder:"DIR" help:"serve <dir>/<ds>.csv at /data/ instead of generated orders"`
	Delay       time.Duration `placeholder:"D" help:"a date becomes available this long after its first request"`
}

func (c *sampleSourceCmd) run(ctx context.Context, stdout, _ io.Writer) error {
	h, err := samplesource.Handler(samplesource.Options{Rows: c.Rows, UpdateRatio: c.UpdateRatio, Dir: c.Dir, Delay: c.Delay})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.Addr)
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
