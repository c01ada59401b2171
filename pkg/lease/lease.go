// Package lease enforces one active run per pipeline with a JetStream KV entry that carries a
// per-key TTL: renewed while the run makes progress, deleted when it ends, and expired by the
// broker when its holder dies. The fencing token is the KV revision at which the current holder
// first wrote the lease, above the bucket's creation time (Token): revisions only grow, and a
// bucket recreated after a lost store is newer, so a newer holder always has a greater token.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/event"
)

var (
	// ErrHeld is returned by Acquire when another run holds the pipeline's lease.
	ErrHeld = errors.New("lease held by another run")
	// ErrLost is returned by Renew when this run no longer holds the lease.
	ErrLost = errors.New("lease lost")
)

// Holder is the value of a lease entry.
type Holder struct {
	RunID      string    `json:"run_id"`
	DS         string    `json:"ds"`
	Fence      uint64    `json:"fence"`
	AcquiredAt time.Time `json:"acquired_at"`
	RenewedAt  time.Time `json:"renewed_at"`
	// Pokes counts Acquire calls by the holding run: the sensor's deliveries, each a source check.
	Pokes int `json:"pokes,omitempty"`
}

// HeldError says who holds the lease.
type HeldError struct{ Holder Holder }

func (e *HeldError) Error() string {
	return fmt.Sprintf("lease held by run %s (ds %s) since %s", e.Holder.RunID, e.Holder.DS, e.Holder.AcquiredAt.Format(time.RFC3339))
}
func (e *HeldError) Unwrap() error { return ErrHeld }

// Leases acquires, renews and releases pipeline leases.
type Leases struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	stream jetstream.Stream // the bucket's stream, for the queue (queue.go)
	now    func() time.Time
	// created is when the bucket (its store) was created, in Unix seconds: the tokens' epoch.
	created atomic.Int64
}

// Token is the fencing token of a lease written at KV revision rev of a bucket created at
// created: the bucket's creation time above the revision. Revisions only grow within one store,
// but restart at 1 when the broker's store is lost and the bucket recreated; the new bucket is
// created later, so its tokens are still greater than every token of the old one, and a run
// after a store loss is not refused as fenced by the tokens PostgreSQL recorded before it
// (docs/reliability.md). 31 bits of revision (two billion lease writes per store) under 32
// bits of seconds since 2024 fit PostgreSQL's bigint.
func Token(created time.Time, rev uint64) uint64 {
	epoch := max(created.Unix()-tokenEpoch, 1)
	return uint64(epoch)<<revisionBits | rev&(1<<revisionBits-1)
}

const revisionBits = 31

var tokenEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Unix()

func (l *Leases) token(rev uint64) uint64 { return Token(time.Unix(l.created.Load(), 0), rev) }

// refreshEpoch rereads when the bucket was created: a store lost and recreated while this
// process ran has a new bucket, whose tokens must start above the old ones.
func (l *Leases) refreshEpoch(ctx context.Context) {
	if info, err := l.stream.Info(ctx); err == nil {
		l.created.Store(info.Created.Unix())
	}
}

// New binds to the lease bucket (provisioned by bus.Provision).
func New(ctx context.Context, js jetstream.JetStream) (*Leases, error) {
	kv, err := bus.KeyValue(ctx, js, bus.LeaseBucket)
	if err != nil {
		return nil, fmt.Errorf("lease bucket: %w", err)
	}
	stream, err := js.Stream(ctx, "KV_"+bus.LeaseBucket)
	if err != nil {
		return nil, fmt.Errorf("lease bucket stream: %w", err)
	}
	l := &Leases{js: js, kv: kv, stream: stream, now: time.Now}
	l.created.Store(stream.CachedInfo().Created.Unix())
	return l, nil
}

// Acquire takes the pipeline's lease for runID, or confirms and renews it if runID already holds
// it (a redelivered message). It returns the holder record with the fencing token.
func (l *Leases) Acquire(ctx context.Context, pipeline, runID, ds string, ttl time.Duration) (h Holder, err error) {
	err = bus.Retry(ctx, func(ctx context.Context) error { h, err = l.acquire(ctx, pipeline, runID, ds, ttl); return err })
	return h, err
}

func (l *Leases) acquire(ctx context.Context, pipeline, runID, ds string, ttl time.Duration) (Holder, error) {
	for attempt := 0; attempt < 3; attempt++ {
		e, err := l.kv.Get(ctx, pipeline)
		switch {
		case bus.IsNotFound(err) || errors.Is(err, jetstream.ErrKeyDeleted):
			now := l.now().UTC()
			h := Holder{RunID: runID, DS: ds, AcquiredAt: now, RenewedAt: now, Pokes: 1}
			l.refreshEpoch(ctx)
			rev, err := l.kv.Create(ctx, pipeline, mustJSON(h), jetstream.KeyTTL(ttl))
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // lost a race; look again
			}
			if err != nil {
				return Holder{}, fmt.Errorf("acquire lease %s: %w", pipeline, err)
			}
			// Record the token in the value so every later read of the lease agrees on it.
			h.Fence = l.token(rev)
			if _, err := l.write(ctx, pipeline, h, rev, ttl); err != nil {
				return Holder{}, fmt.Errorf("acquire lease %s: %w", pipeline, err)
			}
			return h, nil
		case err != nil:
			return Holder{}, fmt.Errorf("read lease %s: %w", pipeline, err)
		}
		var h Holder
		if err := json.Unmarshal(e.Value(), &h); err != nil {
			return Holder{}, fmt.Errorf("decode lease %s: %w", pipeline, err)
		}
		if h.RunID != runID {
			return Holder{}, &HeldError{Holder: h}
		}
		if h.Fence == 0 {
			h.Fence = l.token(e.Revision())
		}
		h.RenewedAt = l.now().UTC()
		h.Pokes++
		if _, err := l.write(ctx, pipeline, h, e.Revision(), ttl); err != nil {
			if isConflict(err) {
				continue
			}
			return Holder{}, fmt.Errorf("renew lease %s: %w", pipeline, err)
		}
		return h, nil
	}
	return Holder{}, fmt.Errorf("acquire lease %s: too much contention", pipeline)
}

// Renew extends runID's lease by ttl. It fails with ErrLost if the lease expired or another run
// holds it (with a fencing token different from fence).
func (l *Leases) Renew(ctx context.Context, pipeline, runID string, fence uint64, ttl time.Duration) error {
	return bus.Retry(ctx, func(ctx context.Context) error { return l.renew(ctx, pipeline, runID, fence, ttl) })
}

func (l *Leases) renew(ctx context.Context, pipeline, runID string, fence uint64, ttl time.Duration) error {
	for attempt := 0; attempt < 3; attempt++ {
		e, err := l.kv.Get(ctx, pipeline)
		if bus.IsNotFound(err) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return fmt.Errorf("renew lease %s for run %s: expired: %w", pipeline, runID, ErrLost)
		}
		if err != nil {
			return fmt.Errorf("renew lease %s: %w", pipeline, err)
		}
		var h Holder
		if err := json.Unmarshal(e.Value(), &h); err != nil {
			return fmt.Errorf("decode lease %s: %w", pipeline, err)
		}
		if h.RunID != runID || (fence != 0 && h.Fence != fence) {
			return fmt.Errorf("renew lease %s for run %s: now held by run %s: %w", pipeline, runID, h.RunID, ErrLost)
		}
		h.RenewedAt = l.now().UTC()
		if _, err := l.write(ctx, pipeline, h, e.Revision(), ttl); err != nil {
			if isConflict(err) {
				continue
			}
			return fmt.Errorf("renew lease %s: %w", pipeline, err)
		}
		return nil
	}
	return fmt.Errorf("renew lease %s: too much contention", pipeline)
}

// Release deletes runID's lease; it is a no-op if another run holds it or it expired.
func (l *Leases) Release(ctx context.Context, pipeline, runID string) error {
	return bus.Retry(ctx, func(ctx context.Context) error { return l.release(ctx, pipeline, runID) })
}

func (l *Leases) release(ctx context.Context, pipeline, runID string) error {
	e, err := l.kv.Get(ctx, pipeline)
	if bus.IsNotFound(err) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("release lease %s: %w", pipeline, err)
	}
	var h Holder
	if err := json.Unmarshal(e.Value(), &h); err != nil || h.RunID != runID {
		return nil
	}
	if err := l.kv.Delete(ctx, pipeline, jetstream.LastRevision(e.Revision())); err != nil && !isConflict(err) {
		return fmt.Errorf("release lease %s: %w", pipeline, err)
	}
	return nil
}

// Get returns the current holder of the pipeline's lease, if any.
func (l *Leases) Get(ctx context.Context, pipeline string) (Holder, bool, error) {
	h, _, held, err := l.Lookup(ctx, pipeline)
	return h, held, err
}

// Lookup is Get with the entry's KV revision, for a later RenewAt.
func (l *Leases) Lookup(ctx context.Context, pipeline string) (h Holder, rev uint64, held bool, err error) {
	err = bus.Retry(ctx, func(ctx context.Context) error { h, rev, held, err = l.lookup(ctx, pipeline); return err })
	return h, rev, held, err
}

func (l *Leases) lookup(ctx context.Context, pipeline string) (Holder, uint64, bool, error) {
	e, err := l.kv.Get(ctx, pipeline)
	if bus.IsNotFound(err) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return Holder{}, 0, false, nil
	}
	if err != nil {
		return Holder{}, 0, false, err
	}
	var h Holder
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return Holder{}, 0, false, err
	}
	if h.Fence == 0 {
		h.Fence = l.token(e.Revision()) // read between Acquire's two writes; Acquire settles on this token
	}
	return h, e.Revision(), true, nil
}

// RenewAt renews the lease of h (as Lookup returned it at revision rev) in one write if nothing
// changed since; otherwise it does what Acquire does for h's run: renew it if the run still
// holds the lease, or fail with a *HeldError. It saves the read when the caller has just read
// the lease (the sensor's webhook, whose latency is its round trips to the broker).
func (l *Leases) RenewAt(ctx context.Context, pipeline string, h Holder, rev uint64, ttl time.Duration) (out Holder, err error) {
	err = bus.Retry(ctx, func(ctx context.Context) error { out, err = l.renewAt(ctx, pipeline, h, rev, ttl); return err })
	return out, err
}

func (l *Leases) renewAt(ctx context.Context, pipeline string, h Holder, rev uint64, ttl time.Duration) (Holder, error) {
	h.RenewedAt = l.now().UTC()
	if _, err := l.write(ctx, pipeline, h, rev, ttl); err == nil {
		return h, nil
	} else if !isConflict(err) {
		return Holder{}, fmt.Errorf("renew lease %s: %w", pipeline, err)
	}
	return l.acquire(ctx, pipeline, h.RunID, h.DS, ttl)
}

// write stores h if the entry is still at revision rev, with a fresh TTL. kv.Update cannot set
// a TTL, so this publishes to the bucket's subject the way Update does, plus the TTL header.
func (l *Leases) write(ctx context.Context, pipeline string, h Holder, rev uint64, ttl time.Duration) (uint64, error) {
	m := &nats.Msg{Subject: event.KVSubject(bus.LeaseBucket, pipeline), Header: nats.Header{}, Data: mustJSON(h)}
	ack, err := l.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // Holder always marshals
	}
	return b
}
