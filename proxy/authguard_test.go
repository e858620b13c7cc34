package proxy

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestAuthGuardBlocksAfterFailuresUntilTheMinuteRolls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newAuthGuard(3)
		for i := 0; i < 3; i++ {
			if g.blocked("a") {
				t.Fatalf("blocked after %d failures", i)
			}
			g.fail("a")
		}
		if !g.blocked("a") || g.blocked("b") {
			t.Fatal("the guard does not block the failing address alone")
		}
		time.Sleep(59 * time.Second) // in the bubble: the fake clock moves at once
		if !g.blocked("a") {
			t.Fatal("unblocked within the minute")
		}
		time.Sleep(2 * time.Second)
		if g.blocked("a") {
			t.Fatal("still blocked in the next minute")
		}
	})
}
