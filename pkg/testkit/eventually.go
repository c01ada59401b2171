package testkit

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds, and fails the test naming what it waited for once within
// has passed. It polls every 10 ms at first, backing off to every 100 ms, so a slow condition (a
// query, a status call) is not hammered during a long wait.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for wait := 10 * time.Millisecond; !cond(); wait = min(2*wait, 100*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", within, what)
		}
		time.Sleep(wait)
	}
}
