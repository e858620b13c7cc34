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

func (f *flakyStore) Reserve(ctx context.Context, a Ask) (Reservation, error) {
	f.calls.Add(1)
	if f.hang.Load() {
		<-ctx.Done()
		return Reservation{}, ctx.Err()
	}
	return f.Memory.Reserve(ctx, a)
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
		if _, err := g.Reserve(ctx, Ask{ID: "r0", Team: "t", Budget: &b, Micros: 300_000}); err != nil {
			t.Fatal(err)
		}
		inner.hang.Store(true)
		start := time.Now()
		if _, err := g.Reserve(ctx, Ask{ID: "r1", Team: "t", Budget: &b, Micros: 400_000}); err != nil {
			t.Fatalf("first check of the outage: %v", err)
		}
		if d := time.Since(start); d != 50*time.Millisecond {
			t.Fatalf("the first check of the outage took %v, want the 50ms timeout", d)
		}
		calls := inner.calls.Load()
		if _, err := g.Reserve(ctx, Ask{ID: "r2", Team: "t", Budget: &b, Micros: 300_000}); err != nil {
			t.Fatalf("local reservation within what was left: %v", err)
		}
		if _, err := g.Reserve(ctx, Ask{ID: "r3", Team: "t", Budget: &b, Micros: 1}); !errors.Is(err, ErrBudgetExceeded) {
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
		if _, err := g.Reserve(ctx, Ask{ID: "r4", Team: "t", Budget: &b, Micros: 300_000}); err != nil {
			t.Fatalf("after the record: %v", err)
		}
		// After the pause the store is tried again, and answers.
		advance(3 * time.Second)
		if _, err := g.Reserve(ctx, Ask{ID: "r5", Team: "t", Budget: &b, Micros: 1}); err != nil || g.Down() {
			t.Fatalf("after the pause: %v (down %v)", err, g.Down())
		}
		if inner.calls.Load() != calls+1 {
			t.Fatalf("store calls %d, want %d", inner.calls.Load(), calls+1)
		}

		closed := NewGuarded(inner, GuardOptions{Timeout: 50 * time.Millisecond})
		inner.hang.Store(true)
		for i := range 3 {
			if _, err := closed.Reserve(ctx, Ask{ID: "c", Team: "t", Budget: &b, Micros: 1}); !errors.Is(err, ErrStoreDown) {
				t.Fatalf("closed, check %d: %v", i, err)
			}
		}
	})
}

// TestGuardedKeyBudgetHoldsLocally: during an outage a key's own budget is
// held locally like a team's, at what the key had left at its last check,
// its in-flight reservations counted and its teammates' not; a team
// without a budget does not refuse its key.
func TestGuardedKeyBudgetHoldsLocally(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, err := OpenMemory("", Options{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		inner := &flakyStore{Memory: m}
		g := NewGuarded(inner, GuardOptions{Timeout: 50 * time.Millisecond, Local: true})
		ctx := context.Background()
		kb := config.Budget{USD: 1, Period: "daily"}
		ask := func(id, key string, micros int64) Ask {
			return Ask{ID: id, Team: "t", Key: key, KeyBudget: &kb, Micros: micros}
		}
		// Reachable: $0.40 reserved, so the key has $0.60 left.
		if _, err := g.Reserve(ctx, ask("r0", "k", 400_000)); err != nil {
			t.Fatal(err)
		}
		inner.hang.Store(true)
		if _, err := g.Reserve(ctx, ask("r1", "k", 500_000)); err != nil {
			t.Fatalf("first check of the outage: %v", err)
		}
		r, err := g.Reserve(ctx, ask("r2", "k", 100_001))
		if !errors.Is(err, ErrKeyBudgetExceeded) {
			t.Fatalf("over what the key had left: %v", err)
		}
		if r.KeySpentMicros != 400_000 || r.KeyReservedMicros != 500_000 {
			t.Errorf("local refusal %+v", r)
		}
		if _, err := g.Reserve(ctx, ask("r2", "k", 100_000)); err != nil {
			t.Fatalf("the last of what the key had left: %v", err)
		}
		// A teammate's key had no check yet: its whole budget.
		if _, err := g.Reserve(ctx, ask("o1", "other", 1_000_000)); err != nil {
			t.Fatalf("a teammate's key: %v", err)
		}
	})
}
