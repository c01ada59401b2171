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
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

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
)

var types = map[Type]bool{Bigint: true, Integer: true, Numeric: true, Text: true, Date: true, Timestamptz: true}

// RunIDColumn is the staging column that records which run loaded a row; contracts may not use it.
const RunIDColumn = "run_id"

// Contract is one data contract.
type Contract struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Key is the column that identifies a row in the target (dbt's unique_key).
	Key string `json:"key"`
	// VersionColumn orders versions of the same key; a row never replaces a newer one.
	VersionColumn string `json:"version_column,omitempty"`
	// UnknownColumns is what a header column the contract does not declare does: "reject"
	// (the default: the file fails) or "ignore" (the column is skipped).
	UnknownColumns string   `json:"unknown_columns,omitempty"`
	Columns        []Column `json:"columns"`
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
// when ref ends in .json, a file at that path, relative to dir unless absolute.
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
		from = "built-in contract " + ref
		if !nameRe.MatchString(ref) {
			return nil, fmt.Errorf("contract %q is neither a built-in name (%s) nor a path ending in .json", ref, strings.Join(BuiltIn(), ", "))
		}
		if b, err = schemas.Contracts.ReadFile("contracts/" + ref + ".json"); err != nil {
			return nil, fmt.Errorf("no built-in contract %q (built-ins: %s; a file path must end in .json)", ref, strings.Join(BuiltIn(), ", "))
		}
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return c, nil
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
func Parse(b []byte) (*Contract, error) {
	var c Contract
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("decode contract: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("decode contract: data after the JSON object")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

var (
	nameRe = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
	// Column names are plain lowercase identifiers so SQL and dbt models can use them unquoted.
	identRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
)

// Validate checks the contract itself: a name, known types, plain unique column names, a key (and
// version column, if any) that is a required column, a known unknown_columns policy, and checks
// (min, max, pattern, max_length, timezone) that suit their column's type.
func (c *Contract) Validate() error {
	if !nameRe.MatchString(c.Name) {
		return fmt.Errorf("contract name %q must be lowercase letters, digits and _, starting with a letter", c.Name)
	}
	if len(c.Columns) == 0 {
		return fmt.Errorf("contract %s declares no columns", c.Name)
	}
	seen := map[string]bool{}
	for i, col := range c.Columns {
		if !identRe.MatchString(col.Name) {
			return fmt.Errorf("contract %s: columns[%d]: name %q is not a plain lowercase SQL identifier", c.Name, i, col.Name)
		}
		if col.Name == RunIDColumn {
			return fmt.Errorf("contract %s: column %s is reserved for the staging table", c.Name, RunIDColumn)
		}
		if seen[col.Name] {
			return fmt.Errorf("contract %s: column %s is declared twice", c.Name, col.Name)
		}
		seen[col.Name] = true
		if !types[col.Type] {
			return fmt.Errorf("contract %s: column %s: unknown type %q (bigint, integer, numeric, text, date, timestamptz)", c.Name, col.Name, col.Type)
		}
		if _, err := compileColumn(col); err != nil {
			return fmt.Errorf("contract %s: column %s: %w", c.Name, col.Name, err)
		}
	}
	switch c.UnknownColumns {
	case "", RejectUnknown, IgnoreUnknown:
	default:
		return fmt.Errorf("contract %s: unknown_columns %q must be %q or %q", c.Name, c.UnknownColumns, RejectUnknown, IgnoreUnknown)
	}
	for _, f := range []struct{ field, name string }{{"key", c.Key}, {"version_column", c.VersionColumn}} {
		if f.name == "" && f.field == "version_column" {
			continue
		}
		col, ok := c.Column(f.name)
		if !ok {
			return fmt.Errorf("contract %s: %s %q is not one of its columns", c.Name, f.field, f.name)
		}
		if !col.Required {
			return fmt.Errorf("contract %s: %s %s must be a required column", c.Name, f.field, f.name)
		}
	}
	return nil
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
// path relative to dir, the config file's directory), keyed by pipeline name.
func ForPipelines(pipelines []config.Pipeline, dir string) (map[string]*Contract, error) {
	out := make(map[string]*Contract, len(pipelines))
	for _, p := range pipelines {
		c, err := Load(p.Contract, dir)
		if err != nil {
			return nil, fmt.Errorf("pipeline %s: %w", p.Name, err)
		}
		out[p.Name] = c
	}
	return out, nil
}
