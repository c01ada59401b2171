// Package contract is the data contract of a pipeline's raw file: which columns a CSV must have,
// their types, which are required, the ranges, lengths and patterns their values must keep, the
// key, and what to do with columns the contract does not know. It loads contracts (built in from
// schemas/contracts or from a JSON file), renders the staging table they describe, and streams a
// CSV through one with constant memory, turning each record into values pgx's binary COPY accepts
// or into *Violations (which match ErrContract) naming the line, column, value and broken rule.
// Columns are matched by header name, so their order in the file does not matter; a UTF-8 byte
// order mark is ignored. Empty, "N/A" and "NULL" (any case) mean no value. Numbers must be plain
// decimals (no exponent, NaN or Infinity); dates are YYYY-MM-DD; timestamps are
// YYYY-MM-DD[T ]HH:MM:SS[.fraction][zone] with zone Z, ±HH, ±HHMM or ±HH:MM, and a timestamp
// without a zone is read in the column's timezone (default UTC). docs/data-path.md is the
// user-facing description of all of this.
package contract

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/schemas"
)

// Type is a column's SQL type.
type Type string

// The column types a contract may use.
const (
	Bigint      Type = "bigint"
	Integer     Type = "integer"
	Numeric     Type = "numeric"
	Text        Type = "text"
	Date        Type = "date"
	Timestamptz Type = "timestamptz"
	Boolean     Type = "boolean"
	// JSONB holds any JSON value; the file carries it as JSON text (quoted as CSV requires).
	JSONB Type = "jsonb"
)

var types = map[Type]bool{Bigint: true, Integer: true, Numeric: true, Text: true, Date: true, Timestamptz: true, Boolean: true, JSONB: true}

// typeNames lists the types for error messages.
const typeNames = "bigint, integer, numeric, text, date, timestamptz, boolean, jsonb"

// SQLName is how PostgreSQL's format_type() names the type, to compare with existing tables.
func (t Type) SQLName() string {
	if t == Timestamptz {
		return "timestamp with time zone"
	}
	return string(t)
}

// RunIDColumn is the staging column that records which run loaded a row; contracts may not use it.
const RunIDColumn = "run_id"

// Contract is one data contract.
type Contract struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Key is the column, or columns, that identify a row in the target (dbt's unique_key): a
	// JSON string or array of strings.
	Key Key `json:"key"`
	// VersionColumn orders versions of the same key; a row never replaces a newer one, and the
	// same version from two dates belongs to the earlier date. Empty: the file run last wins.
	VersionColumn string `json:"version_column,omitempty"`
	// Partition is the target's partition column (it holds the run's ds; it is not a column of
	// the file) and grain; default load_date by day.
	Partition Partition `json:"partition"`
	// UnknownColumns is what a header column the contract does not declare does: "reject"
	// (the default: the file fails) or "ignore" (the column is skipped).
	UnknownColumns string   `json:"unknown_columns,omitempty"`
	Columns        []Column `json:"columns"`

	// source names where the contract was read (a file, or schemas/contracts/<name>.json for a
	// built-in) and text is what was read, so errors about it can name file:line.
	source string
	text   []byte
}

// Key is a contract's key: one column or several.
type Key []string

// UnmarshalJSON accepts "col" or ["col", ...].
func (k *Key) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*k = Key{s}
		return nil
	}
	var cols []string
	if err := json.Unmarshal(b, &cols); err != nil {
		return errors.New("key must be a column name or an array of column names")
	}
	*k = cols
	return nil
}

// MarshalJSON writes a one-column key as a string.
func (k Key) MarshalJSON() ([]byte, error) {
	if len(k) == 1 {
		return json.Marshal(k[0])
	}
	return json.Marshal([]string(k))
}

// String is the key's columns, comma-separated.
func (k Key) String() string { return strings.Join(k, ", ") }

// Grain is how much time one partition of the target covers.
type Grain string

// The partition grains.
const (
	Day   Grain = "day"
	Month Grain = "month"
)

// Partition says how the target is partitioned.
type Partition struct {
	// Column holds the run's execution date (ds) in the staging table and the target: the date
	// whose file carried the stored version of a row.
	Column string `json:"column,omitempty"`
	// Grain is day (a partition per ds) or month (a partition per calendar month).
	Grain Grain `json:"grain,omitempty"`
}

// DefaultPartitionColumn is Partition.Column when the contract does not set it.
const DefaultPartitionColumn = "load_date"

// Start is the first day of the partition that holds day.
func (p Partition) Start(day time.Time) time.Time {
	y, m, d := day.Date()
	if p.Grain == Month {
		d = 1
	}
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// End is the first day after the partition that starts at start.
func (p Partition) End(start time.Time) time.Time {
	if p.Grain == Month {
		return start.AddDate(0, 1, 0)
	}
	return start.AddDate(0, 0, 1)
}

// Suffix is what names the partition that starts at start: YYYYMMDD by day, YYYYMM by month.
func (p Partition) Suffix(start time.Time) string {
	if p.Grain == Month {
		return start.Format("200601")
	}
	return start.Format("20060102")
}

// ParseSuffix is the start of the partition Suffix named; ok is false for anything else.
func (p Partition) ParseSuffix(s string) (start time.Time, ok bool) {
	layout := "20060102"
	if p.Grain == Month {
		layout = "200601"
	}
	if len(s) != len(layout) {
		return time.Time{}, false
	}
	t, err := time.Parse(layout, s)
	if err != nil || t.Format(layout) != s {
		return time.Time{}, false
	}
	return t, true
}

// The unknown_columns policies.
const (
	RejectUnknown = "reject"
	IgnoreUnknown = "ignore"
)

// Column is one column of a contract.
type Column struct {
	Name        string `json:"name"`
	Type        Type   `json:"type"`
	Required    bool   `json:"required"`
	Description string `json:"description,omitempty"`
	// Min and Max bound the value (inclusive): numbers for bigint, integer and numeric, a
	// YYYY-MM-DD date for date, a timestamp for timestamptz.
	Min *Bound `json:"min,omitempty"`
	Max *Bound `json:"max,omitempty"`
	// Pattern is a regular expression (RE2 syntax) a text value must match as a whole.
	Pattern string `json:"pattern,omitempty"`
	// MaxLength is the most characters a text value may have (0: no limit).
	MaxLength int `json:"max_length,omitempty"`
	// Timezone is the IANA zone a timestamptz value without a zone is read in (default UTC).
	Timezone string `json:"timezone,omitempty"`
	// RequireZone makes a timestamptz value without a zone a violation.
	RequireZone bool `json:"require_zone,omitempty"`
}

// Bound is a min or max as written in the contract: a JSON number or string.
type Bound struct{ text string }

// String returns the bound as written.
func (b *Bound) String() string { return b.text }

// UnmarshalJSON keeps a number's literal text (so 0.1 stays exact) or a string's value.
func (b *Bound) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		return json.Unmarshal(data, &b.text)
	}
	var n json.Number
	if err := json.Unmarshal(data, &n); err != nil {
		return errors.New("min and max must be numbers or strings")
	}
	b.text = n.String()
	return nil
}

// MarshalJSON writes the bound back as a string.
func (b *Bound) MarshalJSON() ([]byte, error) { return json.Marshal(b.text) }

// NewBound returns a bound with the given text, for contracts built in code.
func NewBound(text string) *Bound { return &Bound{text: text} }

// Column returns the named column.
func (c *Contract) Column(name string) (Column, bool) {
	for _, col := range c.Columns {
		if col.Name == name {
			return col, true
		}
	}
	return Column{}, false
}

// ColumnNames returns the contract's column names in order.
func (c *Contract) ColumnNames() []string {
	names := make([]string, len(c.Columns))
	for i, col := range c.Columns {
		names[i] = col.Name
	}
	return names
}

// Load returns the contract ref names: a built-in contract (schemas/contracts/<ref>.json) or,
// when ref ends in .json, a file at that path, relative to dir unless absolute. Errors in the
// contract name its file and line.
func Load(ref, dir string) (*Contract, error) {
	var (
		b    []byte
		err  error
		from string
	)
	if strings.HasSuffix(ref, ".json") {
		from = ref
		if !filepath.IsAbs(ref) {
			from = filepath.Join(dir, ref)
		}
		if b, err = os.ReadFile(from); err != nil {
			return nil, fmt.Errorf("read contract: %w", err)
		}
	} else {
		if !nameRe.MatchString(ref) {
			return nil, fmt.Errorf("contract %q is neither a built-in name (%s) nor a path ending in .json", ref, strings.Join(BuiltIn(), ", "))
		}
		if b, err = schemas.Contracts.ReadFile("contracts/" + ref + ".json"); err != nil {
			return nil, fmt.Errorf("no built-in contract %q (built-ins: %s; a file path must end in .json)", ref, strings.Join(BuiltIn(), ", "))
		}
		from = "schemas/contracts/" + ref + ".json"
	}
	return parse(from, b)
}

// BuiltIn lists the names of the built-in contracts.
func BuiltIn() []string {
	entries, _ := fs.ReadDir(schemas.Contracts, "contracts")
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Parse decodes a contract strictly (unknown fields fail) and validates it.
func Parse(b []byte) (*Contract, error) { return parse("contract", b) }

// parse is Parse for text read from source; errors start with source:line.
func parse(source string, b []byte) (*Contract, error) {
	var c Contract
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s:%d: decode contract: %w", source, lineAt(b, dec.InputOffset()), err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s:%d: decode contract: data after the JSON object", source, lineAt(b, dec.InputOffset()))
	}
	c.source, c.text = source, b
	if err := c.Validate(); err != nil {
		return nil, c.located(err)
	}
	return &c, nil
}

// FieldError is a problem with one field of a contract, such as columns[2].type.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Msg }

func fieldErr(path, format string, args ...any) error {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// Source is where the contract was read: a file path, or schemas/contracts/<name>.json.
func (c *Contract) Source() string { return c.source }

// Errorf returns an error about the contract's field at path (key, version_column,
// partition.column, columns[2].type, ...) that starts with the file and line of that field.
func (c *Contract) Errorf(path, format string, args ...any) error {
	return c.located(fieldErr(path, format, args...))
}

// located prefixes a *FieldError with source:line.
func (c *Contract) located(err error) error {
	var fe *FieldError
	if !errors.As(err, &fe) || c.source == "" {
		return err
	}
	return fmt.Errorf("%s:%d: %w", c.source, jsonLine(c.text, fe.Path), err)
}

// ColumnPath is the field path of the named column, for Errorf.
func (c *Contract) ColumnPath(name string) string {
	for i, col := range c.Columns {
		if col.Name == name {
			return "columns[" + strconv.Itoa(i) + "]"
		}
	}
	return "columns"
}

var (
	nameRe = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
	// Column names are plain lowercase identifiers so SQL and dbt models can use them unquoted.
	identRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
)

// Validate checks the contract itself: a name, known types, plain unique column names, a key
// (one or more columns) and version column, if any, that are required columns, a partition
// column that is a plain name not used by the file and a known grain, a known unknown_columns
// policy, and checks (min, max, pattern, max_length, timezone) that suit their column's type.
// It fills in the partition's defaults. Errors are *FieldError.
func (c *Contract) Validate() error {
	if !nameRe.MatchString(c.Name) {
		return fieldErr("name", "contract name %q must be lowercase letters, digits and _, starting with a letter", c.Name)
	}
	if len(c.Columns) == 0 {
		return fieldErr("columns", "contract %s declares no columns", c.Name)
	}
	seen := map[string]bool{}
	for i, col := range c.Columns {
		at := "columns[" + strconv.Itoa(i) + "]"
		if !identRe.MatchString(col.Name) {
			return fieldErr(at+".name", "contract %s: columns[%d]: name %q is not a plain lowercase SQL identifier", c.Name, i, col.Name)
		}
		if col.Name == RunIDColumn {
			return fieldErr(at+".name", "contract %s: column %s is reserved for the staging table", c.Name, RunIDColumn)
		}
		if seen[col.Name] {
			return fieldErr(at+".name", "contract %s: column %s is declared twice", c.Name, col.Name)
		}
		seen[col.Name] = true
		if !types[col.Type] {
			return fieldErr(at+".type", "contract %s: column %s: unknown type %q (%s)", c.Name, col.Name, col.Type, typeNames)
		}
		if _, err := compileColumn(col); err != nil {
			return fieldErr(at, "contract %s: column %s: %v", c.Name, col.Name, err)
		}
	}
	switch c.UnknownColumns {
	case "", RejectUnknown, IgnoreUnknown:
	default:
		return fieldErr("unknown_columns", "contract %s: unknown_columns %q must be %q or %q", c.Name, c.UnknownColumns, RejectUnknown, IgnoreUnknown)
	}
	if len(c.Key) == 0 {
		return fieldErr("key", "contract %s: key \"\" is not one of its columns", c.Name)
	}
	keySeen := map[string]bool{}
	for _, k := range c.Key {
		if keySeen[k] {
			return fieldErr("key", "contract %s: key names column %s twice", c.Name, k)
		}
		keySeen[k] = true
	}
	for _, f := range append(keyFields(c.Key), [2]string{"version_column", c.VersionColumn}) {
		if f[1] == "" && f[0] == "version_column" {
			continue
		}
		col, ok := c.Column(f[1])
		if !ok {
			return fieldErr(f[0], "contract %s: %s %q is not one of its columns (%s)", c.Name, f[0], f[1], strings.Join(c.ColumnNames(), ", "))
		}
		if !col.Required {
			return fieldErr(f[0], "contract %s: %s %s must be a required column", c.Name, f[0], f[1])
		}
		if col.Type == JSONB {
			return fieldErr(f[0], "contract %s: %s %s is jsonb, which cannot be compared", c.Name, f[0], f[1])
		}
	}
	if keySeen[c.VersionColumn] {
		return fieldErr("version_column", "contract %s: version_column %s is also a key column", c.Name, c.VersionColumn)
	}
	if c.Partition.Column == "" {
		c.Partition.Column = DefaultPartitionColumn
	}
	if c.Partition.Grain == "" {
		c.Partition.Grain = Day
	}
	if !identRe.MatchString(c.Partition.Column) || c.Partition.Column == RunIDColumn {
		return fieldErr("partition.column", "contract %s: partition column %q must be a plain lowercase SQL identifier other than %s", c.Name, c.Partition.Column, RunIDColumn)
	}
	if _, clash := c.Column(c.Partition.Column); clash {
		return fieldErr("partition.column", "contract %s: partition column %s is also a column of the file; it holds the run's date, so name it differently", c.Name, c.Partition.Column)
	}
	if c.Partition.Grain != Day && c.Partition.Grain != Month {
		return fieldErr("partition.grain", "contract %s: partition grain %q must be %q or %q", c.Name, c.Partition.Grain, Day, Month)
	}
	return nil
}

// keyFields are the key's columns as (field, column) pairs for validation messages.
func keyFields(k Key) [][2]string {
	out := make([][2]string, len(k))
	for i, col := range k {
		out[i] = [2]string{"key", col}
	}
	return out
}

// StagingDDL is the CREATE TABLE IF NOT EXISTS statement of the staging table that holds this
// contract's rows: its columns (NOT NULL when required), then the partition column (the run's ds)
// and run_id.
func (c *Contract) StagingDDL(schema, table, partitionColumn string) string {
	var b strings.Builder
	b.WriteString("CREATE TABLE IF NOT EXISTS ")
	b.WriteString(pgx.Identifier{schema, table}.Sanitize())
	b.WriteString(" (")
	for _, col := range c.Columns {
		b.WriteString(pgx.Identifier{col.Name}.Sanitize())
		b.WriteString(" ")
		b.WriteString(string(col.Type))
		if col.Required {
			b.WriteString(" NOT NULL")
		}
		b.WriteString(", ")
	}
	b.WriteString(pgx.Identifier{partitionColumn}.Sanitize())
	b.WriteString(" date NOT NULL, ")
	b.WriteString(pgx.Identifier{RunIDColumn}.Sanitize())
	b.WriteString(" text NOT NULL)")
	return b.String()
}

// ForPipelines loads the contract of each pipeline (its `contract`: a built-in name or a .json
// path relative to dir, the config file's directory), keyed by pipeline name. A pipeline that
// sets target.partition_column must agree with its contract.
func ForPipelines(pipelines []config.Pipeline, dir string) (map[string]*Contract, error) {
	out := make(map[string]*Contract, len(pipelines))
	for _, p := range pipelines {
		ref := p.Contract
		if ref == "" {
			ref = p.Name
		}
		c, err := Load(ref, dir)
		if err != nil {
			return nil, fmt.Errorf("pipeline %s: %w", p.Name, err)
		}
		if pc := p.Target.PartitionColumn; pc != "" && pc != c.Partition.Column {
			return nil, fmt.Errorf("pipeline %s: %w", p.Name, c.Errorf("partition.column",
				"contract %s partitions by %s, but the config sets target.partition_column %s (drop it from the config: the contract decides)", c.Name, c.Partition.Column, pc))
		}
		out[p.Name] = c
	}
	return out, nil
}

// Spec is what the dbt macros (dbt_project/macros/sluice_spec.sql) need to know of a pipeline:
// its key, version and partition columns, columns in order, and staging table. The dbt-runner
// passes every pipeline's Spec in var sluice_pipelines.
type Spec struct {
	Key          []string `json:"key"`
	Version      *string  `json:"version"`
	Partition    string   `json:"partition"`
	Grain        Grain    `json:"grain"`
	Columns      []string `json:"columns"`
	StagingTable string   `json:"staging_table"`
}

// Spec is the contract as the dbt macros see it, for a pipeline loading stagingTable.
func (c *Contract) Spec(stagingTable string) Spec {
	s := Spec{Key: c.Key, Partition: c.Partition.Column, Grain: c.Partition.Grain, Columns: c.ColumnNames(), StagingTable: stagingTable}
	if c.VersionColumn != "" {
		v := c.VersionColumn
		s.Version = &v
	}
	return s
}

// Querier runs a query: a *pgx.Conn, pgx.Tx or *pgxpool.Pool.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// TableColumns returns the columns of an existing table and their types as format_type() names
// them; an empty map when the table does not exist.
func TableColumns(ctx context.Context, q Querier, table pgx.Identifier) (map[string]string, error) {
	rows, err := q.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
		WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`, table.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", table.Sanitize(), err)
	}
	have := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return nil, fmt.Errorf("read columns of %s: %w", table.Sanitize(), err)
		}
		have[name] = typ
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", table.Sanitize(), err)
	}
	return have, nil
}

// CheckColumns compares the columns of an existing table (have, from TableColumns) with the
// contract's, plus extra (name and format_type() type) for the columns sluice adds. A missing
// column or another type is an error at the contract's line of the first such column.
func (c *Contract) CheckColumns(what string, have map[string]string, extra ...[2]string) error {
	type want struct{ name, typ, path string }
	wants := make([]want, 0, len(c.Columns)+len(extra))
	for i, col := range c.Columns {
		wants = append(wants, want{col.Name, col.Type.SQLName(), "columns[" + strconv.Itoa(i) + "].type"})
	}
	for _, e := range extra {
		path := ""
		if e[0] == c.Partition.Column {
			path = "partition.column"
		}
		wants = append(wants, want{e[0], e[1], path})
	}
	var problems []string
	at := ""
	for _, w := range wants {
		typ, ok := have[w.name]
		var p string
		switch {
		case !ok:
			p = fmt.Sprintf("column %s is missing", w.name)
		case typ != w.typ && !(w.typ == "numeric" && strings.HasPrefix(typ, "numeric(")):
			p = fmt.Sprintf("column %s is %s, the contract needs %s", w.name, typ, w.typ)
		default:
			continue
		}
		if len(problems) == 0 {
			at = w.path
		}
		problems = append(problems, p)
	}
	if len(problems) == 0 {
		return nil
	}
	return c.Errorf(at, "%s exists with another shape than contract %s: %s (migrate or drop it)", what, c.Name, strings.Join(problems, "; "))
}
