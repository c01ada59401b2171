package validator

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/flow"
)

// corpusCase is one line of testdata/corpus/cases.tsv.
type corpusCase struct {
	line       int
	file       string
	pipeline   string // orders or notes
	maxBadRows int
	load       bool  // load: the file loads (less its quarantined rows); fail: the run fails
	rows       int64 // rows loaded
	bad        int64 // bad rows (quarantined, or counted in the failure)
	expect     string
}

func readCases(t *testing.T) []corpusCase {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "corpus", "cases.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []corpusCase
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "\t")
		if len(fields) != 7 {
			t.Fatalf("cases.tsv:%d: %d fields, want 7", n, len(fields))
		}
		c := corpusCase{line: n, file: fields[0], pipeline: fields[1], expect: fields[6]}
		var errs [3]error
		c.maxBadRows, errs[0] = strconv.Atoi(fields[2])
		c.rows, errs[1] = strconv.ParseInt(fields[4], 10, 64)
		c.bad, errs[2] = strconv.ParseInt(fields[5], 10, 64)
		if err := errors.Join(errs[:]...); err != nil {
			t.Fatalf("cases.tsv:%d: %v", n, err)
		}
		switch fields[3] {
		case "load":
			c.load = true
		case "fail":
		default:
			t.Fatalf("cases.tsv:%d: outcome %q is neither load nor fail", n, fields[3])
		}
		cases = append(cases, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

// TestBadInputCorpus runs every file of testdata/corpus through the real validator (versitygw,
// PostgreSQL) as the landed object of a ds whose staging slice already holds an earlier load, and
// checks the outcome cases.tsv gives it: loaded with that many rows (and that many quarantined),
// or failed permanently with that reason, leaving the earlier slice exactly as it was. Every
// file in the directory must have a line: a new file without an expected outcome fails.
func TestBadInputCorpus(t *testing.T) {
	cases := readCases(t)
	if len(cases) < 30 {
		t.Fatalf("the corpus has %d cases, want at least 30", len(cases))
	}
	entries, err := os.ReadDir(filepath.Join("testdata", "corpus"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, c := range cases {
		if listed[c.file] {
			t.Fatalf("cases.tsv:%d: %s is listed twice", c.line, c.file)
		}
		listed[c.file] = true
	}
	for _, e := range entries {
		if !e.IsDir() && e.Name() != "cases.tsv" && !listed[e.Name()] {
			t.Errorf("testdata/corpus/%s has no expected outcome in cases.tsv", e.Name())
		}
	}

	e := setup(t)
	notes := config.Pipeline{Name: "notes", Contract: "testdata/corpus/contracts/notes.json", StagingTable: "staging_notes",
		Target: config.Target{Schema: "public", Table: "notes", PartitionColumn: "load_date"}}
	contracts, err := contract.ForPipelines([]config.Pipeline{notes}, ".")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.v.Prepare(t.Context(), []config.Pipeline{notes}, contracts); err != nil {
		t.Fatal(err)
	}
	pipelines := map[string]struct {
		p         config.Pipeline
		c         *contract.Contract
		baseline  string
		countRows func(ds string) []string
	}{
		"orders": {e.p, e.c, ordersCSV(1, 2), func(ds string) []string { return e.slice(t, ds) }},
		"notes": {notes, contracts["notes"], "id,updated_at\n7,2024-01-01T00:00:00Z\n", func(ds string) []string {
			return e.rowsOf(t, "SELECT id::text || ' ' || run_id FROM public.staging_notes WHERE load_date = $1::date ORDER BY id", ds)
		}},
	}
	day := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, c := range cases {
		pl, ok := pipelines[c.pipeline]
		if !ok {
			t.Fatalf("cases.tsv:%d: unknown pipeline %q", c.line, c.pipeline)
		}
		ds := day.AddDate(0, 0, i).Format(time.DateOnly)
		t.Run(c.file, func(t *testing.T) {
			p := pl.p
			p.MaxBadRows = c.maxBadRows
			key := "raw/" + p.Name + "/" + ds + ".csv"
			if strings.HasSuffix(c.file, ".gz") {
				key += ".gz"
			}
			// An earlier load of the ds, which a failure must leave as it is.
			first := landed(ds, uint64(2*i+1), e.put(t, key, pl.baseline))
			first.Pipeline = p.Name
			if _, err := e.v.Handle(t.Context(), p, pl.c, first); err != nil {
				t.Fatalf("baseline load: %v", err)
			}
			before := pl.countRows(ds)

			body, err := os.ReadFile(filepath.Join("testdata", "corpus", c.file))
			if err != nil {
				t.Fatal(err)
			}
			in := landed(ds, uint64(2*i+2), e.put(t, key, string(body)))
			in.Pipeline = p.Name
			out, err := e.v.Handle(t.Context(), p, pl.c, in)
			rejects, hasRejects := e.tryGet(t, RejectsKey(key))
			after := pl.countRows(ds)
			if !c.load {
				if err == nil {
					t.Fatalf("cases.tsv:%d: loaded %d rows, want a failure: %s", c.line, out.Rows, c.expect)
				}
				if !flow.IsPermanent(err) || !errors.Is(err, contract.ErrContract) {
					t.Fatalf("cases.tsv:%d: err = %v, want a permanent contract violation", c.line, err)
				}
				if !strings.Contains(err.Error(), c.expect) || strings.ContainsAny(err.Error(), "\n\r") {
					t.Fatalf("cases.tsv:%d: error\n  %s\nwant one line containing\n  %s", c.line, err, c.expect)
				}
				var re *RejectedError
				if gotBad := int64(0); errors.As(err, &re) {
					if gotBad = re.Rows; gotBad != c.bad {
						t.Fatalf("cases.tsv:%d: %d bad rows, want %d", c.line, gotBad, c.bad)
					}
				} else if c.bad != 0 {
					t.Fatalf("cases.tsv:%d: the file stopped at a violation, want %d bad rows counted", c.line, c.bad)
				}
				if strings.Join(after, "\n") != strings.Join(before, "\n") {
					t.Fatalf("cases.tsv:%d: a failed load changed the staging slice:\n%s\nwas\n%s", c.line, strings.Join(after, "\n"), strings.Join(before, "\n"))
				}
				if !hasRejects || !strings.HasPrefix(rejects, "line,column,value,rule,record\n") {
					t.Fatalf("cases.tsv:%d: no rejects file next to the object", c.line)
				}
				return
			}
			if err != nil {
				t.Fatalf("cases.tsv:%d: err = %v, want %d rows loaded", c.line, err, c.rows)
			}
			if out.Rows != c.rows || int64(len(after)) != c.rows {
				t.Fatalf("cases.tsv:%d: event says %d rows, slice has %d, want %d", c.line, out.Rows, len(after), c.rows)
			}
			for _, r := range after {
				if !strings.HasSuffix(r, in.RunID) {
					t.Fatalf("cases.tsv:%d: row %q is not from this load", c.line, r)
				}
			}
			if c.bad == 0 {
				if hasRejects {
					t.Fatalf("cases.tsv:%d: a clean load left a rejects file:\n%s", c.line, rejects)
				}
				return
			}
			if n := int64(strings.Count(rejects, "\n") - 1); n < c.bad || !strings.Contains(rejects, c.expect) {
				t.Fatalf("cases.tsv:%d: rejects file\n%s\nwant %d bad rows and %q", c.line, rejects, c.bad, c.expect)
			}
		})
	}
}

// rowsOf runs a query of one text column with $1 = ds.
func (e *env) rowsOf(t *testing.T, sql, ds string) []string {
	t.Helper()
	rows, err := e.pool.Query(t.Context(), sql, ds)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
