package lease_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/natstest"
)

func newLeases(t *testing.T) *lease.Leases {
	t.Helper()
	_, js := natstest.Connect(t, natstest.Server(t))
	ctx := context.Background()
	if err := bus.Provision(ctx, js, bus.Options{Stream: "T", SubjectPrefix: "etl"}); err != nil {
		t.Fatal(err)
	}
	l, err := lease.New(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestAcquireIsExclusiveAndFenced(t *testing.T) {
	ctx := context.Background()
	l := newLeases(t)
	a, err := l.Acquire(ctx, "orders", "RUN_A", "2026-11-24", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if a.Fence == 0 {
		t.Fatal("no fencing token")
	}
	_, err = l.Acquire(ctx, "orders", "RUN_B", "2026-11-25", time.Minute)
	var held *lease.HeldError
	if !errors.As(err, &held) || held.Holder.RunID != "RUN_A" || !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("second acquire: got %v, want held by RUN_A", err)
	}
	again, err := l.Acquire(ctx, "orders", "RUN_A", "2026-11-24", time.Minute)
	if err != nil || again.Fence != a.Fence {
		t.Fatalf("re-acquire by holder: fence %d err %v, want fence %d", again.Fence, err, a.Fence)
	}
	if err := l.Renew(ctx, "orders", "RUN_A", a.Fence, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := l.Renew(ctx, "orders", "RUN_B", 0, time.Minute); !errors.Is(err, lease.ErrLost) {
		t.Fatalf("renew by non-holder: %v", err)
	}
	if err := l.Release(ctx, "orders", "RUN_B"); err != nil {
		t.Fatal(err)
	}
	if _, held, _ := l.Get(ctx, "orders"); !held {
		t.Fatal("release by a non-holder removed the lease")
	}
	if err := l.Release(ctx, "orders", "RUN_A"); err != nil {
		t.Fatal(err)
	}
	b, err := l.Acquire(ctx, "orders", "RUN_B", "2026-11-25", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if b.Fence <= a.Fence {
		t.Fatalf("fence did not grow: %d then %d", a.Fence, b.Fence)
	}
	// Other pipelines are independent.
	if _, err := l.Acquire(ctx, "customers", "RUN_C", "2026-11-25", time.Minute); err != nil {
		t.Fatal(err)
	}
}

func TestLeaseExpiresWhenHolderStopsRenewing(t *testing.T) {
	ctx := context.Background()
	l := newLeases(t)
	a, err := l.Acquire(ctx, "orders", "RUN_A", "2026-11-24", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := l.Acquire(ctx, "orders", "RUN_B", "2026-11-25", time.Second)
		if err == nil {
			if b.Fence <= a.Fence {
				t.Fatalf("fence did not grow after expiry: %d then %d", a.Fence, b.Fence)
			}
			break
		}
		if !errors.Is(err, lease.ErrHeld) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("lease never expired")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := l.Renew(ctx, "orders", "RUN_A", a.Fence, time.Second); !errors.Is(err, lease.ErrLost) {
		t.Fatalf("old holder renew after expiry: %v", err)
	}
}
