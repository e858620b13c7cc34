package accounting

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"nanogate/config"
)

// flakyStore is a Memory store whose Reserve can be made to hang until its
// context ends, counting the calls that reach it.
type flakyStore struct {
	*Memory
	hang  atomic.Bool
	calls atomic.Int64
}

func (f *flakyStore) Reserve(ctx context.Context, team string, b config.Budget, id string, est int64) (Reservation, error) {
	f.calls.Add(1)
	if f.hang.Load() {
		<-ctx.Done()
		return Reservation{}, ctx.Err()
	}
	return f.Memory.Reserve(ctx, team, b, id, est)
}

// TestGuardedBudgetNeverWaitsOnADeadStore: with the store hanging, one
// check waits Timeout, the next ones none (the store is left alone for
// Pause) and are answered locally within what the team had left; a record
// frees its local reservation; closed refuses at once.
func TestGuardedBudgetNeverWaitsOnADeadStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, err := OpenMemory(filepath.Join(t.TempDir(), "usage.jsonl"), Options{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		inner := &flakyStore{Memory: m}
		locals := 0
		g := NewGuarded(inner, GuardOptions{Timeout: 50 * time.Millisecond, Pause: 2 * time.Second, Local: true,
			OnLocal: func() { locals++ }})
		ctx := context.Background()
		b := config.Budget{USD: 1, Period: "monthly"}
		// Reachable: $0.30 reserved, so the team has $0.70 left.
		if _, err := g.Reserve(ctx, "t", b, "r0", 300_000); err != nil {
			t.Fatal(err)
		}
		inner.hang.Store(true)
		start := time.Now()
		if _, err := g.Reserve(ctx, "t", b, "r1", 400_000); err != nil {
			t.Fatalf("first check of the outage: %v", err)
		}
		if d := time.Since(start); d != 50*time.Millisecond {
			t.Fatalf("the first check of the outage took %v, want the 50ms timeout", d)
		}
		calls := inner.calls.Load()
		if _, err := g.Reserve(ctx, "t", b, "r2", 300_000); err != nil {
			t.Fatalf("local reservation within what was left: %v", err)
		}
		if _, err := g.Reserve(ctx, "t", b, "r3", 1); !errors.Is(err, ErrBudgetExceeded) {
			t.Fatalf("over what was left: %v", err)
		}
		if inner.calls.Load() != calls {
			t.Fatal("the dead store was asked again during its pause")
		}
		if locals != 2 || !g.Down() {
			t.Fatalf("%d local reservations, down %v", locals, g.Down())
		}
		// A record settles a local reservation: room again.
		rec := Record{ID: "r2", Time: time.Now(), Team: "t", Key: "k", Model: "m"}
		inner.hang.Store(false)
		if _, err := g.Apply(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if _, err := g.Reserve(ctx, "t", b, "r4", 300_000); err != nil {
			t.Fatalf("after the record: %v", err)
		}
		// After the pause the store is tried again, and answers.
		time.Sleep(3 * time.Second) // in the bubble: the fake clock moves at once
		if _, err := g.Reserve(ctx, "t", b, "r5", 1); err != nil || g.Down() {
			t.Fatalf("after the pause: %v (down %v)", err, g.Down())
		}
		if inner.calls.Load() != calls+1 {
			t.Fatalf("store calls %d, want %d", inner.calls.Load(), calls+1)
		}

		closed := NewGuarded(inner, GuardOptions{Timeout: 50 * time.Millisecond})
		inner.hang.Store(true)
		for i := range 3 {
			if _, err := closed.Reserve(ctx, "t", b, "c", 1); !errors.Is(err, ErrStoreDown) {
				t.Fatalf("closed, check %d: %v", i, err)
			}
		}
	})
}
