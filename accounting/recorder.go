package accounting

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// DefaultSpoolPath is the Recorder's spool file.
const DefaultSpoolPath = "data/usage-spool.jsonl"

// spoolSyncLines is how many spooled records wait at most for an fsync
// (besides SyncInterval): the spool holds what no store has yet, and is
// written only while the store fails.
const spoolSyncLines = 64

// DefaultLinger is RecorderOptions.Linger's default.
const DefaultLinger = 5 * time.Millisecond

// RecorderOptions tune a Recorder; the zero value takes the defaults.
type RecorderOptions struct {
	// SpoolPath is the local file of records waiting for the store
	// (DefaultSpoolPath). Each replica needs its own.
	SpoolPath string
	// Queue is the capacity of the hand-over channel (4096); past it,
	// Record writes to the spool itself.
	Queue int
	// Batch is the most records applied in one round trip (64).
	Batch int
	// Linger is how often the writer looks for records while they keep
	// coming (5ms; negative: never, it is woken for each record). A record
	// that finds the writer idle is applied at once; records that follow
	// within Linger queue, without waking the writer, for its next look,
	// which applies them together. At a steady rate the store then sees
	// one batch, and the process one wake-up, per Linger rather than per
	// record. A full batch and a Flush do not wait for the look. While a
	// record waits, its reservation still counts against its budget.
	Linger time.Duration
	// ApplyTimeout bounds one round trip to the store (5s).
	ApplyTimeout time.Duration
	// RetryMin and RetryMax bound the wait between replay attempts while
	// the store fails, doubling from one to the other (100ms, 5s).
	RetryMin, RetryMax time.Duration
	// MaxHeld is the most records kept in memory while the spool file
	// cannot be written (100000); past it records are lost, loudly.
	MaxHeld int
	Log     *zap.Logger
}

func (o RecorderOptions) withDefaults() RecorderOptions {
	if o.SpoolPath == "" {
		o.SpoolPath = DefaultSpoolPath
	}
	if o.Queue <= 0 {
		o.Queue = 4096
	}
	if o.Batch <= 0 {
		o.Batch = 64
	}
	if o.Linger == 0 {
		o.Linger = DefaultLinger
	}
	if o.ApplyTimeout <= 0 {
		o.ApplyTimeout = 5 * time.Second
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 100 * time.Millisecond
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(5*time.Second, o.RetryMin)
	}
	if o.MaxHeld <= 0 {
		o.MaxHeld = 100_000
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	return o
}

// Recorder hands usage records to a Store off the response path. Record
// never blocks on the store: records go through a bounded channel to one
// writer goroutine, which applies them in batches. While the store fails,
// records are appended to the spool file (fsynced every 100ms or 64
// records) and replayed in order once it answers again; the spool is
// truncated only after everything in it was applied, and the store counts an
// id once, so a crash at any point replays safely and nothing counts twice.
type Recorder struct {
	st  Store
	o   RecorderOptions
	log *zap.Logger
	sp  *spool

	ch chan item
	// urge tells a writer between looks that a batch is full or a Flush
	// waits (one slot: one nudge covers all that is queued).
	urge     chan struct{}
	mu       sync.RWMutex // closed and the hand-over to ch
	closed   bool
	stop     chan struct{}
	done     chan struct{}
	closeCtx context.Context

	// Owned by the writer goroutine.
	nextTry time.Time
	backoff time.Duration
	look    *time.Timer // the next look while records keep coming
	batch   []Record    // drain's, reused
	flushes []chan struct{}

	down       atomic.Bool
	lastErr    atomic.Pointer[string]
	applied    atomic.Int64
	duplicates atomic.Int64
	spooled    atomic.Int64
	replayed   atomic.Int64
	failed     atomic.Int64
}

type item struct {
	rec   Record
	flush chan struct{} // set on a Flush marker instead of a record
}

// Stats are the Recorder's counters since it started, for /metrics.
type Stats struct {
	Applied    int64 // records the store counted
	Duplicates int64 // records the store had counted before (replays, retries)
	Spooled    int64 // records written to the spool (or held in memory)
	Replayed   int64 // records applied from the spool
	Failed     int64 // records lost: invalid, malformed in the spool, or no room anywhere
	Backlog    int64 // records waiting in the spool now
	StoreDown  bool  // the last store call failed
	SpoolError string
}

// NewRecorder starts a Recorder in front of st. Records a previous run left
// in the spool are replayed at once. The spool file is opened here; a
// failure to open it is not fatal (records are held in memory and the file
// retried) but shows in Healthy.
func NewRecorder(st Store, o RecorderOptions) *Recorder {
	o = o.withDefaults()
	r := &Recorder{st: st, o: o, log: o.Log, sp: newSpool(o.SpoolPath, o.MaxHeld, o.Log),
		ch: make(chan item, o.Queue), urge: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r
}

// Record hands rec over; it never waits for the store. A record that can
// never be applied (Validate fails) is logged and counted as failed.
func (r *Recorder) Record(rec Record) {
	if err := rec.Validate(); err != nil {
		r.failed.Add(1)
		r.log.Error("accounting: dropping an invalid record", zap.String("request_id", rec.ID), zap.Error(err))
		return
	}
	r.mu.RLock()
	if !r.closed {
		select {
		case r.ch <- item{rec: rec}:
			r.mu.RUnlock()
			if len(r.ch) >= r.o.Batch {
				r.nudge()
			}
			return
		default:
		}
	}
	closed := r.closed
	r.mu.RUnlock()
	// The queue is full (or the writer is gone): straight to the spool,
	// which the writer replays. Order across the two is not kept, and
	// need not be: totals are sums.
	r.spool([]Record{rec})
	if closed {
		r.sp.sync()
	}
}

// Flush waits until every record handed over before it was applied, or
// spooled if the store failed.
func (r *Recorder) Flush(ctx context.Context) error {
	r.mu.RLock()
	if r.closed {
		r.mu.RUnlock()
		return errors.New("accounting: recorder closed")
	}
	done := make(chan struct{})
	select {
	case r.ch <- item{flush: done}:
	case <-ctx.Done():
		r.mu.RUnlock()
		return ctx.Err()
	}
	r.mu.RUnlock()
	r.nudge()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close applies what is queued and replays the spool until it is empty or
// ctx ends (called on SIGTERM, after the server drained); what the store did
// not take stays in the fsynced spool for the next start. It errs only when
// records could not be kept anywhere. Records handed over after Close go to
// the spool. Close the Recorder before its Store.
func (r *Recorder) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		<-r.done
		return nil
	}
	r.closed = true
	r.closeCtx = ctx
	r.mu.Unlock()
	close(r.stop)
	<-r.done
	held, _ := r.sp.health()
	if n := r.sp.pending(); n > 0 {
		r.log.Warn("accounting: records left in the spool for the next start", zap.String("path", r.o.SpoolPath),
			zap.Int64("records", n-int64(held)))
	}
	if held > 0 {
		r.failed.Add(int64(held))
		r.log.Error("accounting: records lost at shutdown: the spool is unwritable", zap.String("path", r.o.SpoolPath),
			zap.Int("lost", held))
		return fmt.Errorf("accounting: %d records lost: spool %s unwritable", held, r.o.SpoolPath)
	}
	return nil
}

// Healthy reports whether records reach the store (or at least the spool
// file), with the reason when not: for /readyz.
func (r *Recorder) Healthy() (bool, string) {
	if held, err := r.sp.health(); err != nil {
		return false, fmt.Sprintf("accounting spool %s unwritable (%d records held in memory): %v",
			r.o.SpoolPath, held, err)
	}
	if r.down.Load() {
		msg := "accounting store unreachable"
		if e := r.lastErr.Load(); e != nil {
			msg += ": " + *e
		}
		return false, fmt.Sprintf("%s (%d records spooled)", msg, r.sp.pending())
	}
	if h, ok := r.st.(interface{ Healthy() (bool, string) }); ok {
		return h.Healthy()
	}
	return true, ""
}

// Stats returns the counters.
func (r *Recorder) Stats() Stats {
	s := Stats{Applied: r.applied.Load(), Duplicates: r.duplicates.Load(), Spooled: r.spooled.Load(),
		Replayed: r.replayed.Load(), Failed: r.failed.Load(), Backlog: r.sp.pending(), StoreDown: r.down.Load()}
	if _, err := r.sp.health(); err != nil {
		s.SpoolError = err.Error()
	}
	return s
}

func (r *Recorder) spool(recs []Record) {
	r.spooled.Add(int64(len(recs)))
	if lost := r.sp.add(recs); lost > 0 {
		r.failed.Add(int64(lost))
	}
}

// nudge makes a writer waiting for its next look look now.
func (r *Recorder) nudge() {
	select {
	case r.urge <- struct{}{}:
	default:
	}
}

// run is the writer. Idle, it waits for a record; having applied some, it
// looks again every Linger, and goes idle when a look finds nothing. Only
// an idle writer waits on the queue, so only the record that ends a quiet
// spell wakes it.
func (r *Recorder) run() {
	defer close(r.done)
	tick := time.NewTicker(SyncInterval)
	defer tick.Stop()
	r.look = time.NewTimer(time.Hour)
	r.look.Stop()
	r.batch = make([]Record, 0, r.o.Batch)
	ctx := context.Background()
	looking := false
	for {
		var queue <-chan item
		var look <-chan time.Time
		if looking {
			look = r.look.C
		} else {
			queue = r.ch
		}
		select {
		case it := <-queue:
			looking = r.drain(ctx, &it) && r.o.Linger > 0
		case <-look:
			looking = r.drain(ctx, nil) && r.o.Linger > 0
		case <-r.urge:
			looking = r.drain(ctx, nil) && r.o.Linger > 0 || looking
		case <-tick.C:
			r.sp.sync()
			r.replay(ctx, true)
			continue
		case <-r.stop:
			r.look.Stop()
			r.shutdown()
			return
		}
		r.look.Stop()
		if looking {
			r.look.Reset(r.o.Linger)
		}
	}
}

// drain applies first (when not nil) and what is queued now, a batch at a
// time, and releases the Flushes among them once all are applied; once ctx
// is done (a Close past its deadline) it spools them instead. It reports
// whether it took anything.
func (r *Recorder) drain(ctx context.Context, first *item) bool {
	n := len(r.ch)
	if first == nil && n == 0 {
		return false
	}
	batch, flushes := r.batch[:0], r.flushes[:0]
	defer func() { r.batch, r.flushes = batch[:0], flushes[:0] }()
	take := func(it item) {
		if it.flush != nil {
			flushes = append(flushes, it.flush)
			return
		}
		batch = append(batch, it.rec)
		if len(batch) == r.o.Batch {
			r.settle(ctx, batch)
			batch = batch[:0]
		}
	}
	if first != nil {
		take(*first)
	}
	for range n {
		take(<-r.ch) // only this goroutine receives: n are there
	}
	r.settle(ctx, batch)
	for _, f := range flushes {
		close(f)
	}
	return true
}

// settle applies batch, or spools it once ctx is done.
func (r *Recorder) settle(ctx context.Context, batch []Record) {
	if len(batch) == 0 {
		return
	}
	if ctx.Err() != nil {
		r.spool(batch)
		return
	}
	r.handle(ctx, batch)
}

// handle applies a batch, or spools it when the store fails or a backlog is
// waiting (new records queue behind it, keeping the order).
func (r *Recorder) handle(ctx context.Context, batch []Record) {
	if len(batch) == 0 {
		return
	}
	if r.sp.pending() > 0 {
		r.spool(batch)
		if r.sp.unsyncedLines() >= spoolSyncLines {
			r.sp.sync()
		}
		r.replay(ctx, ctx == context.Background())
		return
	}
	if err := r.apply(ctx, batch); err != nil {
		r.storeFailed(err)
		r.spool(batch)
	}
}

func (r *Recorder) apply(ctx context.Context, recs []Record) error {
	ctx, cancel := context.WithTimeout(ctx, r.o.ApplyTimeout)
	defer cancel()
	n, err := r.st.ApplyBatch(ctx, recs)
	if err != nil {
		return err
	}
	r.applied.Add(int64(n))
	r.duplicates.Add(int64(len(recs) - n))
	if r.down.Load() {
		r.down.Store(false)
		r.log.Info("accounting: store answers again")
	}
	r.backoff = 0
	return nil
}

func (r *Recorder) storeFailed(err error) {
	s := err.Error()
	r.lastErr.Store(&s)
	if !r.down.Swap(true) {
		r.log.Error("accounting: store unreachable: spooling records until it answers",
			zap.String("spool", r.o.SpoolPath), zap.Error(err))
	}
	r.backoff = min(max(2*r.backoff, r.o.RetryMin), r.o.RetryMax)
	r.nextTry = time.Now().Add(r.backoff)
}

// replay applies the spool in order, a batch per round trip, until it is
// empty, the store fails, ctx ends, or (interruptible) the Recorder is
// stopping: the shutdown goes on with its own deadline. It reports whether
// the spool is empty.
func (r *Recorder) replay(ctx context.Context, interruptible bool) bool {
	if r.sp.pending() == 0 {
		return true
	}
	if time.Now().Before(r.nextTry) {
		return false
	}
	total := 0
	for ctx.Err() == nil {
		if interruptible {
			select {
			case <-r.stop:
				return false
			default:
			}
		}
		recs, end, bad, err := r.sp.next(r.o.Batch)
		if err != nil {
			r.log.Error("accounting: cannot read the spool", zap.String("path", r.o.SpoolPath), zap.Error(err))
			r.storeFailed(err)
			return false
		}
		r.failed.Add(int64(bad))
		fromFile := len(recs) > 0 || bad > 0
		if !fromFile {
			recs = r.sp.heldBatch(r.o.Batch)
		}
		if len(recs) > 0 {
			if err := r.apply(ctx, recs); err != nil {
				r.storeFailed(err)
				return false
			}
			r.replayed.Add(int64(len(recs)))
			total += len(recs)
		}
		switch {
		case fromFile:
			r.sp.advance(end, len(recs)+bad)
		case len(recs) > 0:
			r.sp.dropHeld(len(recs))
		case r.sp.finish():
			if total > 0 {
				r.log.Info("accounting: spool replayed", zap.Int("records", total))
			}
			return true
		}
	}
	return false
}

// shutdown runs on the writer goroutine once Close was called: what is
// queued is applied (or spooled), then the spool is replayed until empty or
// the Close deadline, waiting out the backoff in between.
func (r *Recorder) shutdown() {
	ctx := r.closeCtx
	for r.drain(ctx, nil) {
	}
	for r.sp.pending() > 0 && ctx.Err() == nil {
		if wait := time.Until(r.nextTry); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
			continue
		}
		if r.replay(ctx, false) {
			break
		}
	}
	if err := r.sp.close(); err != nil {
		r.log.Error("accounting: closing the spool", zap.String("path", r.o.SpoolPath), zap.Error(err))
	}
}
