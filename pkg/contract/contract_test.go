package contract

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLoadBuiltIn(t *testing.T) {
	c, err := Load("orders", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, col := range c.Columns {
		got = append(got, fmt.Sprintf("%s %s required=%v min=%v max=%v", col.Name, col.Type, col.Required, col.Min, col.Max))
	}
	want := []string{
		"order_id bigint required=true min=1 max=<nil>",
		"customer_id integer required=true min=1 max=<nil>",
		"amount numeric required=true min=0 max=<nil>",
		"updated_at timestamptz required=true min=2000-01-01T00:00:00Z max=<nil>",
	}
	if c.Name != "orders" || c.Key.String() != "order_id" || c.VersionColumn != "updated_at" || c.UnknownColumns != RejectUnknown || !slices.Equal(got, want) {
		t.Fatalf("orders contract = %+v\ncolumns %q", c, got)
	}
	if !slices.Contains(BuiltIn(), "orders") {
		t.Fatalf("BuiltIn() = %v, want it to list orders", BuiltIn())
	}
}

func TestLoadPath(t *testing.T) {
	c, err := Load("contracts/events.json", "testdata")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "events" || len(c.Columns) != 6 {
		t.Fatalf("events contract = %+v", c)
	}
	abs, err := filepath.Abs("testdata/contracts/events.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(abs, "/nonexistent"); err != nil {
		t.Fatalf("absolute path: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		ref, want string
	}{
		{"nosuch", `no built-in contract "nosuch"`},
		{"../orders", "neither a built-in name"},
		{"contracts/missing.json", "read contract"},
		{"contracts/unknown_type.json", `unknown type "uuid"`},
	} {
		_, err := Load(tc.ref, "testdata")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%q) = %v, want an error containing %q", tc.ref, err, tc.want)
		}
	}
}

func TestParseValidates(t *testing.T) {
	const id = `{"name": "id", "type": "bigint", "required": true}`
	for _, tc := range []struct {
		name, json, want string
	}{
		{"unknown field", `{"name": "a", "key": "id", "colums": [], "columns": [` + id + `]}`, `unknown field "colums"`},
		{"trailing data", `{"name": "a", "key": "id", "columns": [` + id + `]} {}`, "data after the JSON object"},
		{"bad name", `{"name": "A b", "key": "id", "columns": [` + id + `]}`, "contract name"},
		{"no columns", `{"name": "a", "key": "id", "columns": []}`, "declares no columns"},
		{"unknown type", `{"name": "a", "key": "id", "columns": [{"name": "id", "type": "int8"}]}`, `unknown type "int8"`},
		{"duplicate", `{"name": "a", "key": "id", "columns": [` + id + `, ` + id + `]}`, "declared twice"},
		{"quoted name", `{"name": "a", "key": "id", "columns": [` + id + `, {"name": "Amount", "type": "numeric"}]}`, "not a plain lowercase SQL identifier"},
		{"reserved", `{"name": "a", "key": "id", "columns": [` + id + `, {"name": "run_id", "type": "text"}]}`, "reserved"},
		{"key missing", `{"name": "a", "columns": [` + id + `]}`, `key "" is not one of its columns`},
		{"key unknown", `{"name": "a", "key": "nope", "columns": [` + id + `]}`, `key "nope" is not one of its columns`},
		{"key optional", `{"name": "a", "key": "id", "columns": [{"name": "id", "type": "bigint"}]}`, "key id must be a required column"},
		{"version unknown", `{"name": "a", "key": "id", "version_column": "v", "columns": [` + id + `]}`, `version_column "v" is not one of its columns`},
		{"unknown_columns", `{"name": "a", "key": "id", "unknown_columns": "drop", "columns": [` + id + `]}`, `unknown_columns "drop" must be "reject" or "ignore"`},
		{"min not a number", `{"name": "a", "key": "id", "columns": [{"name": "id", "type": "bigint", "required": true, "min": "one"}]}`, `column id: min "one": not an integer`},
		{"min is an object", `{"name": "a", "key": "id", "columns": [{"name": "id", "type": "bigint", "required": true, "min": {}}]}`, "min and max must be numbers or strings"},
		{"max below min", `{"name": "a", "key": "id", "columns": [{"name": "id", "type": "bigint", "required": true, "min": 5, "max": 4}]}`, "min 5 is greater than max 4"},
		{"numeric bound with exponent", `{"name": "a", "key": "id", "columns": [` + id + `, {"name": "x", "type": "numeric", "max": 1e3}]}`, `max "1e3": not a plain decimal number`},
		{"date bound", `{"name": "a", "key": "id", "columns": [` + id + `, {"name": "d", "type": "date", "min": "2024-02-30"}]}`, `min "2024-02-30": not a YYYY-MM-DD date`},
		{"timestamp bound", `{"name": "a", "key": "id", "columns": [` + id + `, {"name": "t", "type": "timestamptz", "min": "noon"}]}`, `min "noon": not a timestamp`},
		{"text bound", `{"name": "a", "key": "id", "columns": [` + id + `, {"name": "s", "type": "text", "min": "a"}]}`, "min does not apply to text columns"},
		{"pattern on a number", `{"name": "a", "key": "id", "columns": [` + id + `, {"name": "x", "type": "numeric", "pattern": "1"}]}`, "pattern applies to text columns only"},
		{"bad pattern", `{"name": "a", "key": "id", "columns": [` + id + `, {"name": "s", "type": "text", "pattern": "("}]}`, "pattern: error parsing regexp"},
		{"max_length on a date", `{"name": "a", "key": "id", "columns": [` + id + `, {"name": "d", "type": "date", "max_length": 3}]}`, "max_length applies to text columns only"},
		{"negative max_length", `{"name": "a", "key": "id", "columns": [` + id + `, {"name": "s", "type": "text", "max_length": -1}]}`, "max_length applies to text columns only and must be positive"},
		{"timezone on a date", `{"name": "a", "key": "id", "columns": [` + id + `, {"name": "d", "type": "date", "timezone": "UTC"}]}`, "timezone and require_zone apply to timestamptz columns only"},
		{"unknown timezone", `{"name": "a", "key": "id", "columns": [` + id + `, {"name": "t", "type": "timestamptz", "timezone": "Mars/Olympus"}]}`, `timezone "Mars/Olympus"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.json))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestStagingDDL(t *testing.T) {
	c, err := Load("orders", "")
	if err != nil {
		t.Fatal(err)
	}
	got := c.StagingDDL("public", "staging_orders", "load_date")
	want := `CREATE TABLE IF NOT EXISTS "public"."staging_orders" (` +
		`"order_id" bigint NOT NULL, "customer_id" integer NOT NULL, "amount" numeric NOT NULL, ` +
		`"updated_at" timestamptz NOT NULL, "load_date" date NOT NULL, "run_id" text NOT NULL)`
	if got != want {
		t.Fatalf("StagingDDL =\n%s\nwant\n%s", got, want)
	}

	ev, err := Load("contracts/events.json", "testdata")
	if err != nil {
		t.Fatal(err)
	}
	got = ev.StagingDDL(`we"ird`, "t", "ds")
	want = `CREATE TABLE IF NOT EXISTS "we""ird"."t" ("id" bigint NOT NULL, "n" integer, "x" numeric, "note" text, "day" date, ` +
		`"at" timestamptz NOT NULL, "ds" date NOT NULL, "run_id" text NOT NULL)`
	if got != want {
		t.Fatalf("StagingDDL =\n%s\nwant\n%s", got, want)
	}
}

func TestBuiltInContractsAreValid(t *testing.T) {
	for _, name := range BuiltIn() {
		if _, err := Load(name, ""); err != nil {
			t.Errorf("built-in contract %s: %v", name, err)
		}
	}
}

// TestKeyPartitionAndLines: a composite key, another version column, a monthly partition; and
// a contract whose key, version or partition column is wrong fails naming its file and line.
func TestKeyPartitionAndLines(t *testing.T) {
	ev, err := Load("events", "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ev.Key, Key{"account_id", "event_id"}) || ev.VersionColumn != "revision" ||
		ev.Partition != (Partition{Column: "batch_date", Grain: Month}) {
		t.Fatalf("events = key %v version %s partition %+v", ev.Key, ev.VersionColumn, ev.Partition)
	}
	orders, err := Load("orders", "")
	if err != nil {
		t.Fatal(err)
	}
	if orders.Partition != (Partition{Column: "load_date", Grain: Day}) {
		t.Fatalf("orders partition = %+v, want the default", orders.Partition)
	}
	day := time.Date(2026, 2, 17, 0, 0, 0, 0, time.UTC)
	if s := ev.Partition.Start(day); s.Format(time.DateOnly) != "2026-02-01" || ev.Partition.End(s).Format(time.DateOnly) != "2026-03-01" || ev.Partition.Suffix(s) != "202602" {
		t.Fatalf("monthly partition of %s: %s", day, s)
	}
	if s, ok := ev.Partition.ParseSuffix("202602"); !ok || !s.Equal(day.AddDate(0, 0, -16)) {
		t.Fatalf("ParseSuffix = %v %v", s, ok)
	}
	if _, ok := ev.Partition.ParseSuffix("20260201"); ok {
		t.Fatal("a daily suffix parsed as monthly")
	}

	dir := t.TempDir()
	const body = `{
  "name": "feed",
  "key": %s,
  "version_column": %s,
  "partition": {"column": %s, "grain": %s},
  "columns": [
    {"name": "id", "type": "bigint", "required": true},
    {"name": "seq", "type": "integer", "required": true},
    {"name": "doc", "type": "jsonb"}
  ]
}`
	for _, tc := range []struct {
		key, version, part, grain, want string
	}{
		{`["id", "nope"]`, `"seq"`, `"ds"`, `"day"`, `feed.json:3: contract feed: key "nope" is not one of its columns (id, seq, doc)`},
		{`"id"`, `"sequence"`, `"ds"`, `"day"`, `feed.json:4: contract feed: version_column "sequence" is not one of its columns`},
		{`"id"`, `"seq"`, `"seq"`, `"day"`, `feed.json:5: contract feed: partition column seq is also a column of the file`},
		{`"id"`, `"seq"`, `"ds"`, `"week"`, `feed.json:5: contract feed: partition grain "week" must be "day" or "month"`},
		{`"doc"`, `"seq"`, `"ds"`, `"day"`, `feed.json:3: contract feed: key doc must be a required column`},
	} {
		path := filepath.Join(dir, "feed.json")
		if err := os.WriteFile(path, fmt.Appendf(nil, body, tc.key, tc.version, tc.part, tc.grain), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path, "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load = %v\nwant it to contain %q", err, tc.want)
		}
	}
	c, err := Parse([]byte(`{"name": "f", "key": "id", "columns": [{"name": "id", "type": "bigint", "required": true}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Key, Key{"id"}) || c.VersionColumn != "" {
		t.Fatalf("no version column: %+v", c)
	}
}

func TestBooleanAndJSONValues(t *testing.T) {
	c, err := Parse([]byte(`{"name": "f", "key": "id", "columns": [{"name": "id", "type": "bigint", "required": true},
		{"name": "b", "type": "boolean"}, {"name": "j", "type": "jsonb"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	rd, err := NewReader(strings.NewReader("id,b,j\n1,yes,\"{\"\"a\"\": [1, 2]}\"\n2,F,\n3,,null\n"), c)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rd.Next() {
		got = append(got, fmt.Sprintf("%v", rd.Values()))
	}
	if err := rd.Err(); err != nil {
		t.Fatal(err)
	}
	if want := []string{`[1 true {"a": [1, 2]}]`, `[2 false <nil>]`, `[3 <nil> <nil>]`}; !slices.Equal(got, want) {
		t.Fatalf("values %q, want %q", got, want)
	}
	for _, bad := range []string{"id,b\n1,maybe\n", "id,j\n1,{oops\n", `id,j` + "\n" + `1,"""\u0000"""` + "\n"} {
		rd, err := NewReader(strings.NewReader(bad), c)
		if err != nil {
			t.Fatal(err)
		}
		for rd.Next() {
		}
		if !errors.Is(rd.Err(), ErrContract) {
			t.Errorf("%q: err = %v, want a contract violation", bad, rd.Err())
		}
	}
}
