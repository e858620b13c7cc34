package accounting

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"nanogate/internal/redistest"
)

func fastRetries(spool string) RecorderOptions {
	return RecorderOptions{SpoolPath: spool, ApplyTimeout: time.Second, RetryMin: 10 * time.Millisecond,
		RetryMax: 100 * time.Millisecond}
}

// requests makes n records of team t: mostly one image at the reseller,
// every fifth a failover served by Google, every seventh a failure.
func requests(n int, prefix string) []Record {
	p := NewPricer(testConfig())
	out := make([]Record, n)
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		at := nov25.Add(time.Duration(i) * time.Second)
		key := fmt.Sprint("k", i%3)
		switch {
		case i%7 == 0:
			out[i] = failedRecord(id, at, key, "t", 3)
		case i%5 == 0:
			out[i] = served(p, id, at, key, "t", "google", 2, 1, 12, 3)
		default:
			out[i] = served(p, id, at, key, "t", "laozhang", 1, 1, 12, 3)
		}
	}
	return out
}

func spoolLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

func closeWithin(t *testing.T, r *Recorder, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRecorderSpoolsWhileRedisIsDownAndReplaysExactlyOnce: Redis is killed,
// N requests are recorded, Redis comes back: the totals are exactly N.
func TestRecorderSpoolsWhileRedisIsDownAndReplaysExactlyOnce(t *testing.T) {
	srv := redistest.Start(t)
	st := NewRedis(newClient(t, srv.Addr), nil, Options{})
	spool := filepath.Join(t.TempDir(), "spool.jsonl")
	r := NewRecorder(st, fastRetries(spool))
	defer closeWithin(t, r, 5*time.Second)

	srv.Kill()
	const n = 500
	recs := requests(n, "down")
	for _, rec := range recs {
		r.Record(rec)
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := r.Stats()
	if s.Spooled != n || s.Backlog != n || !s.StoreDown || s.Applied != 0 {
		t.Fatalf("while Redis is down: %+v, want %d spooled", s, n)
	}
	if ok, why := r.Healthy(); ok || !strings.Contains(why, "unreachable") {
		t.Errorf("Healthy() = %v, %q while Redis is down", ok, why)
	}
	waitFor(t, "the spool fsynced", func() bool { return spoolLines(t, spool) == n })

	srv.Restart()
	waitFor(t, "the replay", func() bool { return r.Stats().Backlog == 0 })
	for _, period := range []string{"2026-11-25", "2026-11", PeriodTotal} {
		checkBucket(t, st, recs, "t", period)
	}
	s = r.Stats()
	if s.Applied != n || s.Replayed != n || s.Duplicates != 0 || s.Failed != 0 || s.StoreDown {
		t.Errorf("after the replay: %+v", s)
	}
	if ok, why := r.Healthy(); !ok {
		t.Errorf("Healthy() = false, %q after the replay", why)
	}
	if got := spoolLines(t, spool); got != 0 {
		t.Errorf("spool has %d lines after the replay, want 0", got)
	}
	// New records go straight to Redis again.
	more := requests(10, "after")
	for _, rec := range more {
		r.Record(rec)
	}
	r.Flush(context.Background())
	checkBucket(t, st, append(recs, more...), "t", PeriodTotal)
}

// crashing lets through the first `left` records, then fails as a crash
// mid-replay would.
type crashing struct {
	Store
	mu      sync.Mutex
	left    int
	crashed atomic.Bool
}

func (c *crashing) ApplyBatch(ctx context.Context, recs []Record) (int, error) {
	c.mu.Lock()
	k := min(c.left, len(recs))
	c.left -= k
	c.mu.Unlock()
	n, err := c.Store.ApplyBatch(ctx, recs[:k])
	if err != nil {
		return n, err
	}
	if k < len(recs) {
		c.crashed.Store(true)
		return n, errors.New("crash")
	}
	return n, nil
}

// TestANewRecorderFinishesAReplayCutShortByACrash: a gateway spools N
// records during an outage and stops; the next one replays half and dies
// without truncating the spool; a third replays all of it. Redis counts N.
func TestANewRecorderFinishesAReplayCutShortByACrash(t *testing.T) {
	srv := redistest.Start(t)
	st := NewRedis(newClient(t, srv.Addr), nil, Options{})
	spool := filepath.Join(t.TempDir(), "spool.jsonl")
	const n = 300
	recs := requests(n, "crash")

	srv.Kill()
	r1 := NewRecorder(st, fastRetries(spool))
	for _, rec := range recs {
		r1.Record(rec)
	}
	closeWithin(t, r1, 300*time.Millisecond) // Redis is down: all stays in the spool
	if got := spoolLines(t, spool); got != n {
		t.Fatalf("spool has %d lines after a shutdown during the outage, want %d", got, n)
	}

	srv.Restart()
	half := &crashing{Store: st, left: n / 2}
	r2 := NewRecorder(half, fastRetries(spool))
	waitFor(t, "half the replay", half.crashed.Load)
	// The crash: the process is gone, the spool as it was.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r2.Close(ctx)
	if got := spoolLines(t, spool); got != n {
		t.Fatalf("spool has %d lines after the crash, want %d (untruncated)", got, n)
	}
	if got := read(t, st, "t", PeriodTotal).Team; got.Requests+got.Failed != n/2 {
		t.Fatalf("%d records counted after half a replay, want %d", got.Requests+got.Failed, n/2)
	}

	r3 := NewRecorder(st, fastRetries(spool))
	defer closeWithin(t, r3, 5*time.Second)
	waitFor(t, "the replay", func() bool { return r3.Stats().Backlog == 0 })
	for _, period := range []string{"2026-11-25", "2026-11", PeriodTotal} {
		checkBucket(t, st, recs, "t", period)
	}
	if s := r3.Stats(); s.Applied != n/2 || s.Duplicates != n/2 || s.Replayed != n {
		t.Errorf("third recorder: %+v, want %d applied and %d duplicates", s, n/2, n/2)
	}
	if got := spoolLines(t, spool); got != 0 {
		t.Errorf("spool has %d lines after the replay, want 0", got)
	}
}

// TestRecorderCloseFlushes: Close applies what is queued; a record handed
// over after Close lands in the spool, and the next Recorder applies it.
func TestRecorderCloseFlushes(t *testing.T) {
	srv := redistest.Start(t)
	st := NewRedis(newClient(t, srv.Addr), nil, Options{})
	spool := filepath.Join(t.TempDir(), "spool.jsonl")
	r := NewRecorder(st, fastRetries(spool))
	recs := requests(1000, "close")
	for _, rec := range recs {
		r.Record(rec)
	}
	closeWithin(t, r, 5*time.Second)
	checkBucket(t, st, recs, "t", PeriodTotal)

	late := requests(1, "late")
	r.Record(late[0])
	if got := spoolLines(t, spool); got != 1 {
		t.Fatalf("a record after Close: %d spool lines, want 1", got)
	}
	r2 := NewRecorder(st, fastRetries(spool))
	defer closeWithin(t, r2, 5*time.Second)
	waitFor(t, "the replay", func() bool { return r2.Stats().Backlog == 0 })
	checkBucket(t, st, append(recs, late...), "t", PeriodTotal)
}

// gated is a store whose batches wait until open is closed, as a Redis far
// away or stuck would.
type gated struct {
	Store
	open chan struct{}
}

func (g gated) ApplyBatch(ctx context.Context, recs []Record) (int, error) {
	select {
	case <-g.open:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return g.Store.ApplyBatch(ctx, recs)
}

// TestRecordNeverWaitsForTheStore: with the store stuck and a full queue,
// Record writes to the spool itself, and everything is applied once the
// store answers. In the bubble, a Record that waited for the store could
// only return once time passed (the store's timeout, the retries): none
// does.
func TestRecordNeverWaitsForTheStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, _ := OpenMemory("", Options{}, nil)
		o := fastRetries(filepath.Join(t.TempDir(), "spool.jsonl"))
		o.Queue, o.Batch = 4, 4
		store := gated{Store: st, open: make(chan struct{})}
		r := NewRecorder(store, o)
		recs := requests(2000, "burst")
		start := time.Now()
		for _, rec := range recs {
			r.Record(rec)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("2000 Record calls waited %v for a stuck store", d)
		}
		close(store.open)
		waitFor(t, "the backlog", func() bool {
			r.Flush(context.Background())
			return r.Stats().Backlog == 0
		})
		closeWithin(t, r, 5*time.Second)
		checkBucket(t, st, recs, "t", PeriodTotal)
		if s := r.Stats(); s.Spooled == 0 || s.Applied != 2000 {
			t.Errorf("stats %+v, want some spooled and 2000 applied", s)
		}
	})
}

// TestUnwritableSpool: the spool cannot be created (its directory is a
// file); records are held in memory, Healthy says why, and they are applied
// when the store answers. Past MaxHeld they are lost, and counted.
func TestUnwritableSpool(t *testing.T) {
	srv := redistest.Start(t)
	st := NewRedis(newClient(t, srv.Addr), nil, Options{})
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o600)
	o := fastRetries(filepath.Join(notDir, "spool.jsonl"))
	o.MaxHeld = 100
	r := NewRecorder(st, o)
	defer r.Close(context.Background())
	if ok, why := r.Healthy(); ok || !strings.Contains(why, "unwritable") {
		t.Errorf("Healthy() = %v, %q with an unwritable spool", ok, why)
	}

	srv.Kill()
	recs := requests(120, "held")
	for _, rec := range recs {
		r.Record(rec)
	}
	r.Flush(context.Background())
	if s := r.Stats(); s.Failed != 20 || s.Backlog != 100 || s.SpoolError == "" {
		t.Errorf("stats %+v, want 100 held and 20 lost", s)
	}
	srv.Restart()
	waitFor(t, "the replay from memory", func() bool { return r.Stats().Backlog == 0 })
	checkBucket(t, st, recs[:100], "t", PeriodTotal)
}

// TestRecorderOverTheEmbeddedStore: the embedded store behind a Recorder
// keeps every record across a restart.
func TestRecorderOverTheEmbeddedStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "usage.jsonl")
	m, err := OpenMemory(path, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRecorder(m, fastRetries(filepath.Join(dir, "spool.jsonl")))
	recs := requests(500, "embedded")
	for _, rec := range recs {
		r.Record(rec)
	}
	closeWithin(t, r, 5*time.Second)
	if ok, why := r.Healthy(); !ok {
		t.Error(why)
	}
	m.Close()
	m, err = OpenMemory(path, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	checkBucket(t, m, recs, "t", PeriodTotal)
}

// TestInvalidRecordsAreCountedNotApplied: a record without an id can never
// be applied idempotently; it is logged and counted as failed.
func TestInvalidRecordsAreCountedNotApplied(t *testing.T) {
	st, _ := OpenMemory("", Options{}, nil)
	r := NewRecorder(st, fastRetries(filepath.Join(t.TempDir(), "spool.jsonl")))
	defer closeWithin(t, r, time.Second)
	r.Record(Record{Time: nov25, Key: "k"})
	r.Record(Record{ID: "x", Key: "k"})
	if s := r.Stats(); s.Failed != 2 {
		t.Errorf("failed %d, want 2", s.Failed)
	}
}

// TestSpoolLeftByACrashWithDamage: a spool with a malformed line and a torn
// last line (a crash mid-append) replays every whole record, counts the
// malformed one as failed and is truncated after.
func TestSpoolLeftByACrashWithDamage(t *testing.T) {
	spool := filepath.Join(t.TempDir(), "spool.jsonl")
	recs := requests(3, "damaged")
	var b []byte
	for i, rec := range recs {
		line, _ := json.Marshal(rec)
		b = append(append(b, line...), '\n')
		if i == 1 {
			b = append(b, "{not json\n"...)
		}
	}
	b = append(b, `{"id":"torn","ti`...)
	os.WriteFile(spool, b, 0o600)

	st, _ := OpenMemory("", Options{}, nil)
	r := NewRecorder(st, fastRetries(spool))
	waitFor(t, "the replay", func() bool { return r.Stats().Backlog == 0 })
	closeWithin(t, r, time.Second)
	checkBucket(t, st, recs, "t", PeriodTotal)
	if s := r.Stats(); s.Replayed != 3 || s.Failed != 1 {
		t.Errorf("stats %+v, want 3 replayed and 1 failed", s)
	}
	if got := spoolLines(t, spool); got != 0 {
		t.Errorf("spool has %d lines after the replay", got)
	}
}

// batches is a store that hands each batch it applies to the test.
type batches struct {
	Store
	got chan int
}

func (b batches) ApplyBatch(ctx context.Context, recs []Record) (int, error) {
	b.got <- len(recs)
	return b.Store.ApplyBatch(ctx, recs)
}

// TestRecorderLooksEveryLingerWhileRecordsCome: a record that finds the
// writer idle is applied at once; records that follow wait for the
// writer's next look, Linger later, and are applied together; a full batch
// and a Flush do not wait; a look that finds nothing makes the writer
// idle again. In the bubble the waiting is exactly the time that passes.
func TestRecorderLooksEveryLingerWhileRecordsCome(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, _ := OpenMemory("", Options{}, nil)
		store := batches{Store: st, got: make(chan int, 100)}
		o := fastRetries(filepath.Join(t.TempDir(), "spool.jsonl"))
		o.Batch, o.Linger = 4, 5*time.Millisecond
		r := NewRecorder(store, o)
		defer closeWithin(t, r, 5*time.Second)
		recs := requests(14, "linger")
		batchAfter := func(want int, after time.Duration, start time.Time, what string) {
			t.Helper()
			if n := <-store.got; n != want || time.Since(start) != after {
				t.Errorf("%s: a batch of %d after %v, want %d after %v", what, n, time.Since(start), want, after)
			}
		}

		start := time.Now()
		r.Record(recs[0])
		batchAfter(1, 0, start, "the first record")
		r.Record(recs[1])
		r.Record(recs[2])
		batchAfter(2, o.Linger, start, "the records that followed")

		// A full batch goes at once.
		start = time.Now()
		for _, rec := range recs[3:7] {
			r.Record(rec)
		}
		batchAfter(4, 0, start, "a full batch")

		// A Flush does not wait for the look.
		r.Record(recs[7])
		synctest.Wait()
		if err := r.Flush(context.Background()); err != nil || time.Since(start) != 0 {
			t.Errorf("Flush = %v after %v, want at once", err, time.Since(start))
		}
		batchAfter(1, 0, start, "a flushed record")

		// Looks that find nothing end the spell: the next record goes at
		// once, and the writer sleeps in between.
		advance(3 * o.Linger)
		select {
		case n := <-store.got:
			t.Errorf("a batch of %d with nothing recorded", n)
		default:
		}
		start = time.Now()
		r.Record(recs[8])
		batchAfter(1, 0, start, "a record after a quiet spell")
		checkBucket(t, st, recs[:9], "t", PeriodTotal)
	})
}

// TestACloseOutOfTimeSpoolsWhatIsQueued: records still queued when Close's
// deadline has passed go to the spool for the next start, not to the
// store.
func TestACloseOutOfTimeSpoolsWhatIsQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, _ := OpenMemory("", Options{}, nil)
		store := batches{Store: st, got: make(chan int)} // unbuffered: each batch waits for the test
		spool := filepath.Join(t.TempDir(), "spool.jsonl")
		o := fastRetries(spool)
		o.Batch = 100
		r := NewRecorder(store, o)
		recs := requests(4, "late")
		r.Record(recs[0])
		synctest.Wait() // the writer waits in the store with the first record
		for _, rec := range recs[1:] {
			r.Record(rec)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		closed := make(chan error)
		go func() { closed <- r.Close(ctx) }()
		synctest.Wait()
		if n := <-store.got; n != 1 {
			t.Fatalf("the store's first batch has %d records, want 1", n)
		}
		select {
		case n := <-store.got:
			t.Fatalf("a batch of %d reached the store after Close's deadline", n)
		case err := <-closed:
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := spoolLines(t, spool); got != 3 {
			t.Errorf("%d records in the spool, want the 3 still queued", got)
		}
		checkBucket(t, st, recs[:1], "t", PeriodTotal)
	})
}
