// Package poll waits, in tests, for what only polling can see: the state of
// a real redis-server, of a socket's peer or of another process, none of
// which a synctest bubble can hold. One helper, so that every such wait has a
// deadline and fails the test saying what it waited for, instead of sleeping
// a guessed while. In a bubble it works too, on the bubble's clock.
package poll

import (
	"testing"
	"time"
)

// interval is the time between two looks: short against what the tests
// wait for, long enough not to starve what they wait on.
const interval = 10 * time.Millisecond

// Until calls cond until it holds, failing t with what once d has passed.
func Until(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Within(d, cond) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// Within calls cond until it holds or d has passed, and reports whether it
// held: for a wait whose failure the caller handles (a retry).
func Within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
	return true
}
