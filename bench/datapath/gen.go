package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sluice-etl/sluice/pkg/samplesource"
)

// A samplesource day with these options has exactly 1,000,000 rows: 909,091 new orders and
// round(90,909.1) updates of the previous day's (samplesource caps new orders at 999,999 a day).
const (
	dayNewRows     = 909_091
	dayUpdateRatio = 0.1
)

// errEnough stops generation once the file has its rows.
var errEnough = errors.New("enough rows")

// cmdGen streams an orders file of any number of rows: consecutive samplesource days, each in
// the orders format the source API serves, under one header, cut after the last wanted row.
// Memory stays constant, so a 10M-row file costs no more to make than a 1M-row one.
func cmdGen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	rows := fs.Int64("rows", 1_000_000, "data rows to write")
	start := fs.String("start", "2024-02-01", "date of the first generated day (each day gives 1,000,000 rows)")
	out := fs.String("out", "", "output file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || *rows <= 0 {
		return errors.New("gen needs -out and -rows > 0")
	}
	first, err := time.Parse(time.DateOnly, *start)
	if err != nil {
		return fmt.Errorf("-start: %w", err)
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	lim := &lineLimit{w: bw, left: *rows + 1} // + the header
	opts := samplesource.Options{Rows: dayNewRows, UpdateRatio: dayUpdateRatio}
	for day := 0; ; day++ {
		var w io.Writer = lim
		if day > 0 {
			w = &dropFirstLine{w: lim} // one header for the whole file
		}
		err := samplesource.WriteCSV(w, first.AddDate(0, 0, day).Format(time.DateOnly), opts)
		if errors.Is(err, errEnough) {
			break
		}
		if err != nil {
			f.Close()
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// lineLimit passes through lines until left lines are written, then fails with errEnough.
type lineLimit struct {
	w    io.Writer
	left int64
}

func (l *lineLimit) Write(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errEnough
	}
	n := 0
	for n < len(p) {
		i := bytes.IndexByte(p[n:], '\n')
		if i < 0 {
			n = len(p)
			break
		}
		n += i + 1
		if l.left--; l.left == 0 {
			break
		}
	}
	if _, err := l.w.Write(p[:n]); err != nil {
		return 0, err
	}
	if n < len(p) || l.left == 0 {
		return n, errEnough
	}
	return n, nil
}

// dropFirstLine discards everything up to and including the first newline.
type dropFirstLine struct {
	w    io.Writer
	past bool
}

func (d *dropFirstLine) Write(p []byte) (int, error) {
	if d.past {
		return d.w.Write(p)
	}
	i := bytes.IndexByte(p, '\n')
	if i < 0 {
		return len(p), nil
	}
	d.past = true
	n, err := d.w.Write(p[i+1:])
	return i + 1 + n, err
}
