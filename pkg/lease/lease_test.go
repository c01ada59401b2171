package lease_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

func newLeases(t *testing.T) *lease.Leases {
	t.Helper()
	_, js := testkit.Connect(t, testkit.NATS(t))
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

// TestReacquireRightAfterExpiry takes 100 leases over by expiry: on 20 pipelines at once, a
// holder stops renewing (as a killed process does) while three runs poll for the lease. Every
// time exactly one of them gets it, never before the old lease's time is up, right after it,
// with a greater fencing token, and the old holder can no longer renew.
func TestReacquireRightAfterExpiry(t *testing.T) {
	ctx := context.Background()
	l := newLeases(t)
	const (
		pipelines = 20
		cycles    = 5
		ttl       = time.Second
		// slack bounds "right after": scheduling on a loaded 2-core machine, not lease logic.
		slack = 1500 * time.Millisecond
	)
	type take struct {
		run           string
		fence         uint64
		start, end    time.Time
		contenderErrs []error
	}
	acquire := func(pipeline, run string) (take, error) {
		start := time.Now()
		h, err := l.Acquire(ctx, pipeline, run, "2026-11-24", ttl)
		return take{run: run, fence: h.Fence, start: start, end: time.Now()}, err
	}
	errs := make(chan error, pipelines*cycles*4)
	done := make(chan struct{})
	for p := 0; p < pipelines; p++ {
		go func() {
			defer func() { done <- struct{}{} }()
			pipeline := fmt.Sprintf("p%02d", p)
			prev, err := acquire(pipeline, pipeline+"-first")
			if err != nil {
				errs <- err
				return
			}
			for c := 0; c < cycles; c++ {
				wins := make(chan take, 3)
				failures := make(chan error, 3)
				for k := 0; k < 3; k++ {
					run := fmt.Sprintf("%s-c%d-r%d", pipeline, c, k)
					go func() {
						deadline := time.Now().Add(ttl + 5*time.Second)
						for time.Now().Before(deadline) {
							got, err := acquire(pipeline, run)
							var held *lease.HeldError
							switch {
							case err == nil:
								wins <- got
								return
							case errors.As(err, &held) && held.Holder.RunID != prev.run:
								failures <- nil // another contender won
								return
							case !errors.As(err, &held):
								failures <- fmt.Errorf("%s: acquire: %w", run, err)
								return
							}
							time.Sleep(5 * time.Millisecond)
						}
						failures <- fmt.Errorf("%s: lease of %s never expired", run, prev.run)
					}()
				}
				var won []take
				for k := 0; k < 3; k++ {
					select {
					case w := <-wins:
						won = append(won, w)
					case err := <-failures:
						if err != nil {
							errs <- err
						}
					}
				}
				if len(won) != 1 {
					errs <- fmt.Errorf("%s cycle %d: %d runs took the lease, want exactly 1", pipeline, c, len(won))
					return
				}
				w := won[0]
				if w.end.Before(prev.start.Add(ttl)) {
					errs <- fmt.Errorf("%s cycle %d: %s took the lease %s after %s took it, before its %s were up",
						pipeline, c, w.run, w.end.Sub(prev.start), prev.run, ttl)
				}
				if late := w.end.Sub(prev.end.Add(ttl)); late > slack {
					errs <- fmt.Errorf("%s cycle %d: lease taken %s after it expired", pipeline, c, late)
				}
				if w.fence <= prev.fence {
					errs <- fmt.Errorf("%s cycle %d: fence went from %d to %d", pipeline, c, prev.fence, w.fence)
				}
				if err := l.Renew(ctx, pipeline, prev.run, prev.fence, ttl); !errors.Is(err, lease.ErrLost) {
					errs <- fmt.Errorf("%s cycle %d: expired holder renewed: %v", pipeline, c, err)
				}
				prev = w
			}
		}()
	}
	for p := 0; p < pipelines; p++ {
		<-done
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// After expiry the broker leaves a delete marker that itself expires; the lease must be free
// both while the marker is there (TestReacquireRightAfterExpiry) and after it is gone.
func TestAcquireAfterTheExpiryMarkerIsGone(t *testing.T) {
	ctx := context.Background()
	ns := testkit.NATS(t)
	_, js := testkit.Connect(t, ns)
	if err := bus.Provision(ctx, js, bus.Options{Stream: "T", SubjectPrefix: "etl"}); err != nil {
		t.Fatal(err)
	}
	// Markers live a minute in production; one second here, so the test sees them go.
	st, err := js.Stream(ctx, "KV_"+bus.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	sc := st.CachedInfo().Config
	sc.SubjectDeleteMarkerTTL = time.Second
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	l, err := lease.New(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(ctx, "orders", "RUN_A", "2026-11-24", time.Second); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	sawMarker := false
	for {
		m, err := st.GetLastMsgForSubject(ctx, "$KV."+bus.LeaseBucket+".orders")
		if err == nil && m.Header.Get("Nats-Marker-Reason") == "MaxAge" {
			sawMarker = true
		}
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break // lease expired and its marker too
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease or marker still there: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !sawMarker {
		t.Fatal("the lease vanished without an expiry marker")
	}
	b, err := l.Acquire(ctx, "orders", "RUN_B", "2026-11-25", time.Second)
	if err != nil {
		t.Fatalf("acquire after the marker expired: %v", err)
	}
	if h, held, err := l.Get(ctx, "orders"); err != nil || !held || h.RunID != "RUN_B" || h.Fence != b.Fence {
		t.Fatalf("lease after acquire: %+v held %v err %v", h, held, err)
	}
}

func TestRenewAtFromALookup(t *testing.T) {
	ctx := context.Background()
	l := newLeases(t)
	a, err := l.Acquire(ctx, "orders", "RUN_A", "2026-11-24", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	h, rev, held, err := l.Lookup(ctx, "orders")
	if err != nil || !held || h.Fence != a.Fence {
		t.Fatalf("lookup: %+v rev %d held %v err %v", h, rev, held, err)
	}
	// Nothing changed since the lookup: one write.
	got, err := l.RenewAt(ctx, "orders", h, rev, time.Minute)
	if err != nil || got.Fence != a.Fence || !got.RenewedAt.After(h.RenewedAt) {
		t.Fatalf("renew at a fresh revision: %+v, %v", got, err)
	}
	// The holder renewed meanwhile: the stale revision falls back to a confirming read.
	if got, err := l.RenewAt(ctx, "orders", h, rev, time.Minute); err != nil || got.Fence != a.Fence {
		t.Fatalf("renew at a stale revision: %+v, %v", got, err)
	}
	// Another run holds it now: the lookup's run is refused.
	if err := l.Release(ctx, "orders", "RUN_A"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(ctx, "orders", "RUN_B", "2026-11-25", time.Minute); err != nil {
		t.Fatal(err)
	}
	var heldErr *lease.HeldError
	if _, err := l.RenewAt(ctx, "orders", h, rev, time.Minute); !errors.As(err, &heldErr) || heldErr.Holder.RunID != "RUN_B" {
		t.Fatalf("renew after another run took the lease: %v", err)
	}
}
