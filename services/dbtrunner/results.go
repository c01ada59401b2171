package dbtrunner

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/event"
)

// nodeResult is the part of one entry of dbt's run_results.json the runner uses.
type nodeResult struct {
	UniqueID        string  `json:"unique_id"`
	Status          string  `json:"status"`
	ExecutionTime   float64 `json:"execution_time"`
	Message         string  `json:"message"`
	AdapterResponse struct {
		RowsAffected *int64 `json:"rows_affected"`
	} `json:"adapter_response"`
	Timing []struct {
		Name        string `json:"name"`
		StartedAt   string `json:"started_at"`
		CompletedAt string `json:"completed_at"`
	} `json:"timing"`
}

func readRunResults(path string) ([]nodeResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dbt wrote no run results: %w", err)
	}
	var rr struct {
		Results []nodeResult `json:"results"`
	}
	if err := json.Unmarshal(b, &rr); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return rr.Results, nil
}

// modelResults converts node results for the completed event. RowsAffected is what the adapter
// reported (the rows an incremental model inserted; -1 where dbt has no count, as for a view or a
// node that did not run).
func modelResults(rs []nodeResult) []event.ModelResult {
	out := make([]event.ModelResult, 0, len(rs))
	for _, r := range rs {
		rows := int64(-1)
		if r.AdapterResponse.RowsAffected != nil {
			rows = *r.AdapterResponse.RowsAffected
		}
		out = append(out, event.ModelResult{Node: r.UniqueID, Status: r.Status, Seconds: max(r.ExecutionTime, 0), RowsAffected: rows})
	}
	return out
}

// span returns when the node started and finished (its compile and execute phases), if it ran.
func (r nodeResult) span() (start, end time.Time, ok bool) {
	for _, t := range r.Timing {
		s, err1 := time.Parse(time.RFC3339Nano, t.StartedAt)
		e, err2 := time.Parse(time.RFC3339Nano, t.CompletedAt)
		if err1 != nil || err2 != nil {
			continue
		}
		if start.IsZero() || s.Before(start) {
			start = s
		}
		if e.After(end) {
			end = e
		}
	}
	return start, end, !start.IsZero()
}

const scope = "github.com/sluice-etl/sluice/services/dbtrunner"

// tracer uses the provider of the step's span, so dbt's spans join the run's trace.
func tracer(ctx context.Context) trace.Tracer {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer(scope)
}

// nodeSpans records one span per dbt node under ctx's span, with the node's own timing, status,
// rows and upstream nodes (deps, by node), so the trace shows the run's lineage.
func nodeSpans(ctx context.Context, rs []nodeResult, deps map[string][]string) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return
	}
	now := time.Now()
	for _, r := range rs {
		start, end, ran := r.span()
		if !ran {
			start, end = now, now
		}
		attrs := []attribute.KeyValue{
			attribute.String("dbt.node", r.UniqueID),
			attribute.String("dbt.status", r.Status),
			attribute.Float64("dbt.execution_time_s", r.ExecutionTime),
			attribute.StringSlice("dbt.depends_on", deps[r.UniqueID]),
		}
		if r.AdapterResponse.RowsAffected != nil {
			attrs = append(attrs, attribute.Int64("dbt.rows_affected", *r.AdapterResponse.RowsAffected))
		}
		_, s := tracer(ctx).Start(ctx, r.UniqueID, trace.WithTimestamp(start), trace.WithAttributes(attrs...))
		if failed[r.Status] {
			s.SetStatus(codes.Error, oneLine(r.Message, 600))
		}
		s.End(trace.WithTimestamp(end))
	}
}

// upstream reads each node's direct upstream nodes from manifest.json; nil if it cannot.
func upstream(path string) map[string][]string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var m struct {
		Nodes map[string]struct {
			DependsOn struct {
				Nodes []string `json:"nodes"`
			} `json:"depends_on"`
		} `json:"nodes"`
	}
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	out := make(map[string][]string, len(m.Nodes))
	for id, n := range m.Nodes {
		out[id] = n.DependsOn.Nodes
	}
	return out
}
