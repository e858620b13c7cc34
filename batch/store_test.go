package batch

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"nanogate/internal/poll"
	"nanogate/internal/redistest"
)

// storeBackend is one Store under the shared suite.
type storeBackend struct {
	s Store
	// shared: several replicas share the store (lines can be reclaimed).
	shared bool
	// reopen returns the store as a restarted process finds it (nil: the
	// state is not the process's).
	reopen func() Store
	// twin is another replica's handle on the same state (the store itself
	// when there is one replica).
	twin Store
}

func localBackend(t *testing.T) *storeBackend {
	dir := t.TempDir()
	s, err := OpenLocal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &storeBackend{s: s, twin: s}
	b.reopen = func() Store {
		b.s.Close()
		s, err := OpenLocal(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		b.s = s
		return s
	}
	t.Cleanup(func() { b.s.Close() })
	return b
}

func redisBackend(t *testing.T) *storeBackend {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { c.Close() })
	return &storeBackend{s: NewRedis(c, "test:"), shared: true, twin: NewRedis(c, "test:")}
}

func TestLocalStore(t *testing.T) { runStoreSuite(t, localBackend) }
func TestRedisStore(t *testing.T) { runStoreSuite(t, redisBackend) }

func testBatch(id, owner string) *Batch {
	return &Batch{ID: id, Owner: owner, Team: "design", Key: "ci", Endpoint: EndpointChat, InputFileID: "file-x",
		CompletionWindow: "24h", Status: StatusInProgress, CreatedAt: 1, InProgressAt: 1, ExpiresAt: 86401}
}

func spans(n int) []Span {
	out := make([]Span, n)
	for i := range out {
		out[i] = Span{Off: int64(100 * i), Len: 99}
	}
	return out
}

// must returns a function that fails t on an error and returns the value:
// must[T](t)(f()).
func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func runStoreSuite(t *testing.T, nb func(t *testing.T) *storeBackend) {
	ctx := context.Background()
	now := time.Now()

	t.Run("CreateGetListUpdate", func(t *testing.T) {
		b := nb(t)
		var ids []string
		for i := range 5 {
			id := NewBatchID(now.Add(time.Duration(i) * time.Millisecond))
			owner := "t:design"
			if i == 2 {
				owner = "t:ops"
			}
			if err := b.s.Create(ctx, testBatch(id, owner), spans(3)); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		got := must[*Batch](t)(b.s.Get(ctx, ids[0]))
		if got.Status != StatusInProgress || got.Counts != (Counts{Total: 3}) || got.Key != "ci" {
			t.Fatalf("Get: %+v", got)
		}
		if _, err := b.s.Get(ctx, NewBatchID(now)); err != ErrNotFound {
			t.Fatalf("Get of an unknown batch: %v", err)
		}
		page, more, err := b.s.List(ctx, "t:design", "", 2)
		if err != nil || !more || len(page) != 2 || page[0].ID != ids[4] || page[1].ID != ids[3] {
			t.Fatalf("first page: %v %v %v", page, more, err)
		}
		page, more, err = b.s.List(ctx, "t:design", ids[3], 2)
		if err != nil || more || len(page) != 2 || page[0].ID != ids[1] || page[1].ID != ids[0] {
			t.Fatalf("second page: %d batches, more %v, %v", len(page), more, err)
		}
		all, _, _ := b.s.List(ctx, "", "", 100)
		if len(all) != 5 {
			t.Fatalf("every owner: %d", len(all))
		}
		up, err := b.s.Update(ctx, ids[0], func(x *Batch) bool {
			x.Status, x.CompletedAt, x.Counts.Completed = StatusCompleted, 9, 1000
			return true
		})
		if err != nil || up.Status != StatusCompleted || up.Counts.Completed != 0 {
			t.Fatalf("Update: %+v %v", up, err)
		}
		if got := must[*Batch](t)(b.s.Get(ctx, ids[0])); got.CompletedAt != 9 || got.Counts.Completed != 0 {
			t.Fatalf("after Update: %+v", got)
		}
		active := must[[]string](t)(b.s.Active(ctx))
		if slices.Contains(active, ids[0]) || len(active) != 4 {
			t.Fatalf("active %v", active)
		}
		if _, err := b.s.Update(ctx, NewBatchID(now), func(*Batch) bool { return true }); err != ErrNotFound {
			t.Fatalf("Update of an unknown batch: %v", err)
		}
	})

	t.Run("AFailedBatchIsNotActive", func(t *testing.T) {
		b := nb(t)
		bt := testBatch(NewBatchID(now), "t:design")
		bt.Status, bt.Errors = StatusFailed, []LineError{{Code: "empty_file", Message: "empty"}}
		if err := b.s.Create(ctx, bt, nil); err != nil {
			t.Fatal(err)
		}
		got := must[*Batch](t)(b.s.Get(ctx, bt.ID))
		if got.Status != StatusFailed || len(got.Errors) != 1 || got.Counts != (Counts{}) {
			t.Fatalf("%+v", got)
		}
		if active := must[[]string](t)(b.s.Active(ctx)); len(active) != 0 {
			t.Fatalf("active %v", active)
		}
		if page, _, _ := b.s.List(ctx, "t:design", "", 10); len(page) != 1 {
			t.Fatalf("listed %d", len(page))
		}
	})

	t.Run("EveryLineIsTakenOnce", func(t *testing.T) {
		b := nb(t)
		id := NewBatchID(now)
		const n = 50
		if err := b.s.Create(ctx, testBatch(id, "t:design"), spans(n)); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		seen := map[int]int{}
		var wg sync.WaitGroup
		for c := range 4 {
			wg.Go(func() {
				for {
					tasks, err := b.s.Take(ctx, id, fmt.Sprint("c", c), 3)
					if err != nil {
						t.Error(err)
						return
					}
					if len(tasks) == 0 {
						return
					}
					mu.Lock()
					for _, tk := range tasks {
						seen[tk.Line]++
						if tk.Span != (Span{Off: int64(100 * tk.Line), Len: 99}) {
							t.Errorf("line %d: span %+v", tk.Line, tk.Span)
						}
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(seen) != n {
			t.Fatalf("%d lines taken, want %d", len(seen), n)
		}
		for line, k := range seen {
			if k != 1 {
				t.Errorf("line %d taken %d times", line, k)
			}
		}
	})

	t.Run("DoneCountsOnce", func(t *testing.T) {
		b := nb(t)
		id := NewBatchID(now)
		b.s.Create(ctx, testBatch(id, "t:design"), spans(3))
		tasks := must[[]Task](t)(b.s.Take(ctx, id, "a", 10))
		if len(tasks) != 3 {
			t.Fatalf("took %d", len(tasks))
		}
		c := must[Counts](t)(b.s.Done(ctx, tasks[0], Completed, []byte(`{"custom_id":"a"}`)))
		if c != (Counts{Total: 3, Completed: 1}) {
			t.Fatalf("counts %+v", c)
		}
		// The same line again (a reclaimed copy that ran too): not counted.
		c = must[Counts](t)(b.s.Done(ctx, tasks[0], Failed, []byte(`{"custom_id":"a2"}`)))
		if c != (Counts{Total: 3, Completed: 1}) {
			t.Fatalf("counts after a second outcome %+v", c)
		}
		if ok := must[bool](t)(b.s.HasResult(ctx, tasks[0])); !ok {
			t.Fatal("no result after Done")
		}
		if ok := must[bool](t)(b.s.HasResult(ctx, tasks[1])); ok {
			t.Fatal("a result before Done")
		}
		must[Counts](t)(b.s.Done(ctx, tasks[1], Failed, []byte(`{"custom_id":"b"}`)))
		c = must[Counts](t)(b.s.Done(ctx, tasks[2], Skipped, nil))
		if c != (Counts{Total: 3, Completed: 1, Failed: 1, Skipped: 1}) || !c.Done() {
			t.Fatalf("final counts %+v", c)
		}
		got := map[string]Outcome{}
		err := b.s.Results(ctx, id, func(kind Outcome, line []byte) error {
			got[string(line)] = kind
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]Outcome{`{"custom_id":"a"}`: Completed, `{"custom_id":"b"}`: Failed, "": Skipped}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("results %v, want %v", got, want)
		}
		if more := must[[]Task](t)(b.s.Take(ctx, id, "b", 10)); len(more) != 0 {
			t.Fatalf("lines handed out again after Done: %v", more)
		}
		// Dropped: no more outcomes count, and the batch's lines are gone.
		b.s.Update(ctx, id, func(x *Batch) bool { x.Status = StatusCompleted; return true })
		if err := b.s.Drop(ctx, id); err != nil {
			t.Fatal(err)
		}
		if c, _ := b.s.Done(ctx, tasks[2], Completed, []byte("x")); c.Completed > 1 {
			t.Fatalf("an outcome counted after Drop: %+v", c)
		}
		if got := must[*Batch](t)(b.s.Get(ctx, id)); got.Status != StatusCompleted {
			t.Fatalf("after Drop: %+v", got)
		}
	})

	t.Run("LinesOfADeadConsumerAreReclaimed", func(t *testing.T) {
		b := nb(t)
		if !b.shared {
			t.Skip("one replica: nothing to reclaim")
		}
		id := NewBatchID(now)
		b.s.Create(ctx, testBatch(id, "t:design"), spans(4))
		held := must[[]Task](t)(b.s.Take(ctx, id, "dead", 2))
		alive := must[[]Task](t)(b.s.Take(ctx, id, "alive", 2))
		lines := func(ts []Task) []int {
			out := []int{}
			for _, tk := range ts {
				out = append(out, tk.Line)
			}
			slices.Sort(out)
			return out
		}
		// Lines idle for 200 ms are reclaimable, on Redis's clock: the test
		// reclaims until some are, the live consumer's heartbeat keeping
		// its lines.
		var got []Task
		poll.Until(t, 10*time.Second, "the dead consumer's lines to go idle", func() bool {
			if err := b.s.Touch(ctx, "alive", alive); err != nil {
				t.Fatal(err)
			}
			got = must[[]Task](t)(b.s.Reclaim(ctx, id, "rescuer", 200*time.Millisecond, 10))
			return len(got) > 0
		})
		if want := lines(held); !slices.Equal(lines(got), want) {
			t.Fatalf("reclaimed %v, want the dead consumer's %v", lines(got), want)
		}
		// A touch by the dead consumer, back from the dead, does not take
		// them back: had it, they would be idle with the live consumer's
		// lines, touched for the last time just after.
		b.s.Touch(ctx, "dead", held)
		b.s.Touch(ctx, "alive", alive)
		var again []Task
		poll.Until(t, 10*time.Second, "the live consumer's lines to go idle", func() bool {
			b.s.Touch(ctx, "rescuer", got)
			again = must[[]Task](t)(b.s.Reclaim(ctx, id, "x", 200*time.Millisecond, 10))
			return len(again) > 0
		})
		if want := lines(alive); !slices.Equal(lines(again), want) {
			t.Fatalf("second reclaim: %v, want only the lines alive stopped touching, %v", lines(again), want)
		}
		// An acknowledged line is never reclaimed: x's lines, idle since
		// after the rescuer's last touch, show when the rescuer's would be.
		must[Counts](t)(b.s.Done(ctx, got[0], Completed, []byte("{}")))
		must[Counts](t)(b.s.Done(ctx, got[1], Completed, []byte("{}")))
		var last []Task
		poll.Until(t, 10*time.Second, "x's lines to go idle", func() bool {
			last = must[[]Task](t)(b.s.Reclaim(ctx, id, "y", 200*time.Millisecond, 10))
			return len(last) > 0
		})
		if want := lines(again); !slices.Equal(lines(last), want) {
			t.Fatalf("third reclaim: %v, want x's %v and no line acknowledged", lines(last), want)
		}
	})

	t.Run("RestartRunsWhatWasNotDone", func(t *testing.T) {
		b := nb(t)
		if b.reopen == nil {
			t.Skip("the state outlives the process")
		}
		id := NewBatchID(now)
		b.s.Create(ctx, testBatch(id, "t:design"), spans(4))
		tasks := must[[]Task](t)(b.s.Take(ctx, id, "a", 4))
		must[Counts](t)(b.s.Done(ctx, tasks[1], Completed, []byte(`{"n":1}`)))
		must[Counts](t)(b.s.Done(ctx, tasks[3], Failed, []byte(`{"n":3}`)))
		s := b.reopen()
		got := must[*Batch](t)(s.Get(ctx, id))
		if got.Counts != (Counts{Total: 4, Completed: 1, Failed: 1}) || got.Status != StatusInProgress {
			t.Fatalf("after restart: %+v", got)
		}
		again := must[[]Task](t)(s.Take(ctx, id, "a", 10))
		if len(again) != 2 || again[0].Line != 0 || again[1].Line != 2 {
			t.Fatalf("taken after restart: %+v", again)
		}
	})

	t.Run("FinishedBatchesAreRemovedAfterRetention", func(t *testing.T) {
		b := nb(t)
		end := func(id string, status string, at int64) {
			t.Helper()
			_, err := b.s.Update(ctx, id, func(x *Batch) bool {
				switch x.Status = status; status {
				case StatusCompleted:
					x.CompletedAt = at
				case StatusCancelled:
					x.CancelledAt = at
				}
				return true
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		var ids []string
		for i := range 4 {
			id := NewBatchID(now.Add(time.Duration(i) * time.Millisecond))
			if err := b.s.Create(ctx, testBatch(id, "t:design"), spans(2)); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		end(ids[0], StatusCompleted, 1000)
		end(ids[1], StatusCancelled, 1999)
		end(ids[2], StatusCompleted, 2000) // ended at the cut: kept
		// ids[3] runs: kept whatever its age.
		failed := testBatch(NewBatchID(now.Add(5*time.Millisecond)), "t:design")
		failed.Status, failed.FailedAt = StatusFailed, 500
		if err := b.s.Create(ctx, failed, nil); err != nil {
			t.Fatal(err)
		}
		var removed atomic.Int64
		var wg sync.WaitGroup
		for i := range 4 {
			s := b.s
			if i%2 == 1 {
				s = b.twin
			}
			wg.Go(func() {
				n, err := s.SweepFinished(ctx, time.Unix(2000, 0))
				if err != nil {
					t.Error(err)
				}
				removed.Add(int64(n))
			})
		}
		wg.Wait()
		if b.shared {
			// Replicas may both see a batch before one removes it: the
			// count is what each saw, the removal is what matters.
			if removed.Load() < 3 {
				t.Fatalf("removed %d, want 3", removed.Load())
			}
		} else if removed.Load() != 3 {
			t.Fatalf("removed %d, want 3", removed.Load())
		}
		for _, id := range []string{ids[0], ids[1], failed.ID} {
			if _, err := b.s.Get(ctx, id); err != ErrNotFound {
				t.Fatalf("%s after its retention: %v", id, err)
			}
		}
		page, _, err := b.s.List(ctx, "t:design", "", 10)
		if err != nil || len(page) != 2 || page[0].ID != ids[3] || page[1].ID != ids[2] {
			t.Fatalf("listed after the sweep: %v %v", page, err)
		}
		if all, _, _ := b.s.List(ctx, "", "", 10); len(all) != 2 {
			t.Fatalf("%d batches in the index, want 2", len(all))
		}
		if n, err := b.s.SweepFinished(ctx, time.Unix(2000, 0)); n != 0 || err != nil {
			t.Fatalf("a second sweep: %d %v", n, err)
		}
		if active := must[[]string](t)(b.s.Active(ctx)); !slices.Equal(active, []string{ids[3]}) {
			t.Fatalf("active %v", active)
		}
		if b.reopen != nil {
			s := b.reopen()
			if _, err := s.Get(ctx, ids[0]); err != ErrNotFound {
				t.Fatalf("a removed batch after a restart: %v", err)
			}
		}
	})

	t.Run("LockHasOneHolder", func(t *testing.T) {
		b := nb(t)
		id := NewBatchID(now)
		if ok := must[bool](t)(b.s.Lock(ctx, id, "a", time.Second)); !ok {
			t.Fatal("first lock refused")
		}
		if ok := must[bool](t)(b.s.Lock(ctx, id, "b", time.Second)); ok {
			t.Fatal("second holder got the lock")
		}
		if ok := must[bool](t)(b.s.Lock(ctx, id, "a", time.Second)); !ok {
			t.Fatal("holder could not extend")
		}
		b.s.Unlock(ctx, id, "b") // not the holder: no effect
		if ok := must[bool](t)(b.s.Lock(ctx, id, "b", time.Second)); ok {
			t.Fatal("unlock by another holder released the lock")
		}
		b.s.Unlock(ctx, id, "a")
		if ok := must[bool](t)(b.s.Lock(ctx, id, "b", time.Second)); !ok {
			t.Fatal("lock not free after unlock")
		}
	})
}
