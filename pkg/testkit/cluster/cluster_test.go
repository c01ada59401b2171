package cluster

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestClusterLosesNodes checks the kit on what the chaos suite relies on: an R3 stream keeps
// every acknowledged message when its leader is SIGKILLed, a node restarted with its store and a
// node restarted with its store wiped catch up, and a leader can be placed on a chosen node.
func TestClusterLosesNodes(t *testing.T) {
	if os.Getenv("SLUICE_CHAOS") != "full" {
		t.Skip("the cluster kit's own test runs with the fault-injection suite: SLUICE_CHAOS=full (make chaos)")
	}
	c := ForTest(t, Options{})
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := js.Publish(ctx, "t.x", []byte(fmt.Sprint(i)), jetstream.WithMsgID(fmt.Sprint(i)),
				jetstream.WithRetryAttempts(100), jetstream.WithRetryWait(100*time.Millisecond)); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}
	msgs := func() uint64 {
		t.Helper()
		s, err := js.Stream(ctx, "T")
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().State.Msgs
	}
	publish(0, 100)

	leader, err := c.Leader(ctx, js, "T")
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	next, err := c.WaitLeader(ctx, js, "T", leader)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("leader %s SIGKILLed: %s leads after %s", leader.Name, next.Name, time.Since(killed).Round(time.Millisecond))
	publish(100, 200)
	if err := leader.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitCurrent(ctx, js, "T"); err != nil {
		t.Fatal(err)
	}

	// A follower loses its disk: it comes back empty, catches up, and can lead with every message.
	var follower *Node
	for _, n := range c.Nodes {
		if n != next {
			follower = n
		}
	}
	if err := follower.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := follower.Wipe(); err != nil {
		t.Fatal(err)
	}
	publish(200, 250)
	started := time.Now()
	if err := follower.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := follower.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitCurrent(ctx, js, "T"); err != nil {
		t.Fatal(err)
	}
	t.Logf("node %s restarted with its store wiped: current after %s", follower.Name, time.Since(started).Round(time.Millisecond))
	if err := c.StepDown(ctx, nc, js, "T", follower); err != nil {
		t.Fatal(err)
	}
	if got := msgs(); got != 250 {
		t.Errorf("the wiped node leads with %d messages, want 250", got)
	}
}
