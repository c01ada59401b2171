package flow

import (
	"errors"
	"fmt"
	"time"
)

// A handler's error decides what happens to the message:
//   - nil: the next event is published and the message acked;
//   - *WaitError: the message is redelivered after Delay (a deferrable wait; not an attempt);
//   - ErrSkip: the run is dropped without failing;
//   - a Permanent error: the run fails at once (no retry), `failed` is published;
//   - any other error is transient: retried with the pipeline's policy, then `failed`.

// ErrSkip drops the run without failing it (a busy lease with on_busy: skip).
var ErrSkip = errors.New("run skipped")

// ErrPermanent marks errors that can never succeed on retry (bad data, contract violation).
var ErrPermanent = errors.New("permanent")

type permanentError struct{ err error }

func (e *permanentError) Error() string        { return e.err.Error() }
func (e *permanentError) Unwrap() []error      { return []error{e.err, ErrPermanent} }
func (e *permanentError) Is(target error) bool { return target == ErrPermanent }

// Permanent marks err as not worth retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// Permanentf is Permanent(fmt.Errorf(...)).
func Permanentf(format string, args ...any) error { return Permanent(fmt.Errorf(format, args...)) }

// IsPermanent reports whether err was marked permanent.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// WaitError asks for the message to come back after Delay: the step's precondition (data at the
// source, a free lease) does not hold yet. Waiting holds no goroutine, only the stored message.
type WaitError struct {
	Delay  time.Duration
	Reason string
	// Queued is true when the run waits its turn behind other runs (a held lease), not for data.
	Queued bool
}

func (e *WaitError) Error() string { return "waiting: " + e.Reason }

// Wait returns a *WaitError.
func Wait(delay time.Duration, format string, args ...any) error {
	return &WaitError{Delay: delay, Reason: fmt.Sprintf(format, args...)}
}

// Queue returns a *WaitError for a run that waits its turn behind other runs.
func Queue(delay time.Duration, format string, args ...any) error {
	return &WaitError{Delay: delay, Reason: fmt.Sprintf(format, args...), Queued: true}
}
