package cluster

import (
	"context"
	"testing"
	"time"
)

// ForTest starts a cluster for t (three nodes unless o.Nodes says otherwise), building
// nats-server from the test's own module when o.Bin is empty and storing under t.TempDir()
// when o.Dir is empty; it is stopped when the test ends.
func ForTest(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Bin == "" {
		bin, err := Build(".", t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		o.Bin = bin
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("nats cluster: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}
