package poll

import (
	"testing"
	"testing/synctest"
	"time"
)

// fakeT records a failure instead of ending the test.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = format
	panic(f)
}

// until runs Until against a fakeT and reports its failure message, if any.
func until(d time.Duration, cond func() bool) (failed string) {
	f := &fakeT{}
	defer func() {
		if r := recover(); r != nil && r != any(f) {
			panic(r)
		}
		failed = f.failed
	}()
	Until(f, d, "the condition", cond)
	return ""
}

func TestUntilReturnsOnceTheConditionHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		calls := 0
		if msg := until(time.Second, func() bool { calls++; return calls == 3 }); msg != "" {
			t.Fatalf("failed: %s", msg)
		}
		if calls != 3 || time.Since(start) != 2*interval {
			t.Fatalf("%d calls over %v, want 3 over two intervals", calls, time.Since(start))
		}
	})
}

func TestUntilFailsAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if msg := until(time.Second, func() bool { return false }); msg == "" {
			t.Fatal("a condition that never holds did not fail")
		}
		if d := time.Since(start); d < time.Second || d > time.Second+interval {
			t.Fatalf("gave up after %v, want the 1s deadline", d)
		}
	})
}

func TestWithinReportsWhetherTheConditionHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		if !Within(time.Second, func() bool { calls++; return calls == 2 }) {
			t.Error("a condition that came to hold: false")
		}
		if Within(time.Second, func() bool { return false }) {
			t.Error("a condition that never held: true")
		}
	})
}
