package flow_test

import (
	"context"
	"errors"
	"testing"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
)

func TestOnGivesTheStepItsOwnTypes(t *testing.T) {
	ctx := context.Background()
	p := &config.Pipeline{Name: "orders"}
	rt := flow.On("fetcher", func(_ context.Context, _ *config.Pipeline, in *event.Available) (*event.Landed, error) {
		if in.URL == "" {
			return nil, nil // ends the flow
		}
		return &event.Landed{Run: in.Run, Object: event.Object{SourceURL: in.URL}}, nil
	}, func(_ *config.Pipeline, in *event.Available) error {
		if in.URL == "bad" {
			return errors.New("not the source")
		}
		return nil
	})
	if rt.Step != "fetcher" || rt.Consumes != event.KindAvailable {
		t.Fatalf("route %s consumes %s, want fetcher on available", rt.Step, rt.Consumes)
	}
	out, err := rt.Handle(ctx, p, &event.Available{Run: event.Run{RunID: "r1"}, URL: "http://x/1.csv"})
	if l, ok := out.(*event.Landed); err != nil || !ok || l.RunID != "r1" || l.Object.SourceURL != "http://x/1.csv" {
		t.Fatalf("handle = %#v, %v", out, err)
	}
	// A nil result is no event at all, not a typed nil the router would publish.
	if out, err := rt.Handle(ctx, p, &event.Available{}); out != nil || err != nil {
		t.Fatalf("handle of the end = %#v, %v; want nil, nil", out, err)
	}
	if _, err := rt.Handle(ctx, p, &event.Landed{}); !flow.IsPermanent(err) {
		t.Fatalf("an event of another kind: err = %v, want permanent", err)
	}
	if err := rt.Claims(p, &event.Available{URL: "bad"}); err == nil || err.Error() != "not the source" {
		t.Fatalf("claims = %v", err)
	}
	if err := rt.Claims(p, &event.Available{URL: "http://x/1.csv"}); err != nil {
		t.Fatalf("claims = %v", err)
	}
	if flow.On("partitioner", func(context.Context, *config.Pipeline, *event.Validated) (*event.Partitioned, error) { return nil, nil }).Claims != nil {
		t.Fatal("a route without claims has a claims check")
	}
}
