// Package lineage says what each step of a run read and wrote — the source file, the landed S3
// object, the staging table, the target table and the dbt models — naming datasets as
// OpenLineage does, and sends OpenLineage run events (START, COMPLETE, FAIL, ABORT) for every run
// and every step to an HTTP endpoint (Marquez) or a file. The same datasets label the steps'
// trace spans, so a trace and a lineage graph tell the same story.
package lineage

import (
	"net"
	"net/url"
	"strings"

	"github.com/sluice-etl/sluice/pkg/event"
)

// Dataset is a dataset named the OpenLineage way: a namespace (where it lives) and a name.
type Dataset struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// String is the dataset as one URI-like string, for span attributes.
func (d Dataset) String() string {
	if strings.HasPrefix(d.Name, "/") {
		return d.Namespace + d.Name
	}
	return d.Namespace + "/" + d.Name
}

// Namespaces says where the warehouse is: OpenLineage names a table by its server and database.
type Namespaces struct {
	// Postgres is postgres://host:port.
	Postgres string
	// Database is the database name.
	Database string
}

// PostgresNamespaces takes the server and database of a PostgreSQL URL, never its credentials.
func PostgresNamespaces(pgURL string) Namespaces {
	u, err := url.Parse(pgURL)
	if err != nil || u.Host == "" {
		return Namespaces{Postgres: "postgres://unknown", Database: "postgres"}
	}
	host := u.Host
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(strings.Trim(host, "[]"), "5432")
	}
	db := strings.TrimPrefix(u.Path, "/")
	if db == "" {
		db = "postgres"
	}
	return Namespaces{Postgres: "postgres://" + host, Database: db}
}

// Source names a source file by its URL without credentials or query (which may hold a token).
func Source(raw string) Dataset {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return Dataset{Namespace: "http://unknown", Name: "unknown"}
	}
	return Dataset{Namespace: u.Scheme + "://" + u.Host, Name: u.EscapedPath()}
}

// Object names an S3 object.
func Object(o event.Object) Dataset {
	return Dataset{Namespace: "s3://" + o.Bucket, Name: o.Key}
}

// Table names a table given as schema.table.
func (n Namespaces) Table(qualified string) Dataset {
	return Dataset{Namespace: n.Postgres, Name: n.Database + "." + qualified}
}

// Step returns what a step read and wrote, from the event it consumed and the one it produced
// (nil when it failed: then only what it read is known).
func (n Namespaces) Step(in, out event.Event) (inputs, outputs []Dataset) {
	switch e := in.(type) {
	case *event.Available:
		inputs = append(inputs, Source(e.URL))
	case *event.Landed:
		inputs = append(inputs, Object(e.Object))
	case *event.Validated:
		inputs = append(inputs, n.Table(e.StagingTable))
	case *event.Partitioned:
		inputs = append(inputs, n.Table(e.StagingTable))
	}
	switch e := out.(type) {
	case *event.Available:
		inputs = append(inputs, Source(e.URL)) // the sensor looked at the source; it wrote nothing
	case *event.Landed:
		outputs = append(outputs, Object(e.Object))
	case *event.Validated:
		outputs = append(outputs, n.Table(e.StagingTable))
	case *event.Partitioned:
		outputs = append(outputs, n.Table(e.Table))
	case *event.Completed:
		outputs = append(outputs, n.completed(e)...)
	}
	return inputs, outputs
}

// Run returns what a whole run read and wrote: the source file and everything dbt built.
func (n Namespaces) Run(c *event.Completed) (inputs, outputs []Dataset) {
	if c.Object.SourceURL != "" {
		inputs = append(inputs, Source(c.Object.SourceURL))
	}
	return inputs, n.completed(c)
}

// completed lists the target table and the tables of the dbt models the run built. dbt builds
// its models in the target's schema (the dbt runner's profile says so).
func (n Namespaces) completed(c *event.Completed) []Dataset {
	out := []Dataset{n.Table(c.Table)}
	schema, _, _ := strings.Cut(c.Table, ".")
	for _, m := range Models(c) {
		if d := n.Table(schema + "." + m); d != out[0] {
			out = append(out, d)
		}
	}
	return out
}

// Models returns the names of the dbt models of a completed run (not its tests or seeds).
func Models(c *event.Completed) []string {
	var out []string
	for _, m := range c.Models {
		if rest, ok := strings.CutPrefix(m.Node, "model."); ok {
			if _, name, ok := strings.Cut(rest, "."); ok {
				out = append(out, name)
			}
		}
	}
	return out
}
