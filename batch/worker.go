package batch

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// dispatch hands lines to the workers: first held lines whose wait is over,
// then new lines of the active batches in turn, one at a time and round
// robin, so that a big batch does not hold back the others; a batch that
// waits for room in its limits or budget is skipped until then. It also
// drains batches that are ending, and notices expired, stuck and finished
// ones.
func (m *Manager) dispatch() {
	defer close(m.dispatched)
	var rr int
	var last time.Time
	for {
		select {
		case <-m.quit:
			return
		default:
		}
		if time.Since(last) >= m.o.Poll {
			m.refresh()
			m.drainEnding()
			last = time.Now()
		}
		if !m.next(&rr) {
			m.sleep()
		}
	}
}

// sleep waits for a kick (a line finished, a batch was created or
// cancelled), the next held line's turn or the poll interval.
func (m *Manager) sleep() {
	d := m.o.Poll
	m.mu.Lock()
	now := time.Now()
	if m.running < m.o.Workers {
		for _, w := range m.waiting {
			d = min(d, max(w.due.Sub(now), time.Millisecond))
		}
	}
	m.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-m.quit:
	case <-m.kick:
	case <-t.C:
	}
}

// refresh reads the active batches, and moves on those that expired, whose
// creation was cut short, or whose lines all have an outcome.
func (m *Manager) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ids, err := m.ledger.Active(ctx)
	if err != nil {
		m.storeError("listing active batches", err)
		return
	}
	info := make(map[string]*Batch, len(ids))
	// The batches are tended from this list, not from info: once info is
	// m.info, finalization and tend itself write to it under m.mu.
	active := make([]*Batch, 0, len(ids))
	var depth int64
	for _, id := range ids {
		b, err := m.ledger.Get(ctx, id)
		if err != nil {
			continue
		}
		info[id] = b
		active = append(active, b)
		depth += b.Counts.Left()
	}
	m.mu.Lock()
	m.info = info
	now := time.Now()
	for id, until := range m.paused {
		if now.After(until) || info[id] == nil {
			delete(m.paused, id)
		}
	}
	for id := range m.empty {
		if info[id] == nil {
			delete(m.empty, id)
			delete(m.lastRec, id)
		}
	}
	m.mu.Unlock()
	if mt := m.o.Metrics; mt != nil {
		mt.BatchQueueDepth.Set(float64(depth))
		mt.BatchesActive.Set(float64(len(active)))
	}
	for _, b := range active {
		m.tend(ctx, b, now)
	}
}

// tend moves one active batch on: expiry, a creation cut short,
// finalization once every line has an outcome.
func (m *Manager) tend(ctx context.Context, b *Batch, now time.Time) {
	switch {
	case b.Status == StatusValidating && now.Sub(time.Unix(b.CreatedAt, 0)) > m.o.ValidatingTimeout:
		nb, err := m.ledger.Update(ctx, b.ID, func(x *Batch) bool {
			if x.Status != StatusValidating {
				return false
			}
			x.Status, x.FailedAt = StatusFailed, now.Unix()
			x.Errors = []LineError{{Code: "validation_interrupted",
				Message: "The gateway stopped while creating this batch; create it again."}}
			return true
		})
		if err == nil && nb.Status == StatusFailed {
			m.outcomes.Drop(ctx, b.ID)
			m.notify(m.rt(), nb)
		}
	case b.Status == StatusValidating:
	case b.Ending == "" && now.Unix() >= b.ExpiresAt:
		nb, err := m.ledger.Update(ctx, b.ID, func(x *Batch) bool {
			if Final(x.Status) || x.Ending != "" {
				return false
			}
			x.Ending = endExpire
			return true
		})
		if err == nil && nb.Ending == endExpire {
			m.log.Info("batch expiring", zap.String("batch", b.ID), zap.Int64("left", b.Counts.Left()))
			m.mu.Lock()
			m.info[b.ID] = nb
			m.mu.Unlock()
		}
	case b.Counts.Done():
		m.finalizeAsync(b.ID)
	}
}

// next starts one line if a worker is free and there is one; it reports
// whether it did.
func (m *Manager) next(rr *int) bool {
	m.mu.Lock()
	if m.running >= m.o.Workers {
		m.mu.Unlock()
		return false
	}
	now := time.Now()
	// Held lines whose wait is over go first.
	best := -1
	for i, w := range m.waiting {
		if !w.due.After(now) && (best < 0 || w.due.Before(m.waiting[best].due)) {
			best = i
		}
	}
	if best >= 0 {
		t := m.waiting[best].t
		m.waiting = slices.Delete(m.waiting, best, best+1)
		m.startLocked(t)
		m.mu.Unlock()
		return true
	}
	// A batch whose lines wait here (for a retry) takes no more than a
	// worker's worth of them: the others are left to other replicas. A
	// batch waiting for room takes none (paused).
	waiting := map[string]int{}
	for _, w := range m.waiting {
		waiting[w.t.Batch]++
	}
	ids := make([]string, 0, len(m.info))
	for id, b := range m.info {
		if b.Status != StatusInProgress || b.Ending != "" || now.Before(m.paused[id]) || now.Before(m.empty[id]) ||
			waiting[id] >= m.o.Workers {
			continue
		}
		ids = append(ids, id)
	}
	free := m.o.Workers - m.running
	m.mu.Unlock()
	slices.Sort(ids)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range ids {
		id := ids[(*rr+i)%len(ids)]
		tasks := m.reclaim(ctx, id, free)
		if len(tasks) == 0 {
			var err error
			tasks, err = m.queue.Take(ctx, id, m.o.Consumer, 1)
			if err != nil {
				m.storeError("taking lines", err)
				return false
			}
		}
		if len(tasks) == 0 {
			m.mu.Lock()
			m.empty[id] = now.Add(m.o.Poll)
			m.mu.Unlock()
			continue
		}
		*rr += i + 1
		m.mu.Lock()
		for j := range tasks {
			t := &tasks[j]
			if m.held[taskKey{t.Batch, t.Line}] != nil {
				continue // ours already: reclaimed from ourselves
			}
			if m.running < m.o.Workers {
				m.startLocked(t)
			} else {
				m.held[taskKey{t.Batch, t.Line}] = t
				m.waiting = append(m.waiting, &waitingTask{t: t, due: now})
			}
		}
		m.mu.Unlock()
		return true
	}
	return false
}

// reclaim takes over, every half of reclaim_after, lines of batch id that a
// replica stopped touching.
func (m *Manager) reclaim(ctx context.Context, id string, n int) []Task {
	m.mu.Lock()
	due := time.Since(m.lastRec[id]) >= m.o.ReclaimAfter/2
	if due {
		m.lastRec[id] = time.Now()
	}
	m.mu.Unlock()
	if !due {
		return nil
	}
	tasks, err := m.queue.Reclaim(ctx, id, m.o.Consumer, m.o.ReclaimAfter, n)
	if err != nil {
		m.storeError("reclaiming lines", err)
		return nil
	}
	if len(tasks) > 0 {
		m.log.Info("batch lines reclaimed from a replica that stopped", zap.String("batch", id), zap.Int("lines", len(tasks)))
	}
	return tasks
}

func (m *Manager) startLocked(t *Task) {
	m.held[taskKey{t.Batch, t.Line}] = t
	m.running++
	if mt := m.o.Metrics; mt != nil {
		mt.BatchWorkersBusy.Set(float64(m.running))
	}
	m.lines.Add(1)
	go m.work(t)
}

// work runs one line and records its outcome, or holds it to run again
// later.
func (m *Manager) work(t *Task) {
	defer m.lines.Done()
	keep := m.runTask(t)
	m.mu.Lock()
	m.running--
	if !keep {
		delete(m.held, taskKey{t.Batch, t.Line})
	}
	if mt := m.o.Metrics; mt != nil {
		mt.BatchWorkersBusy.Set(float64(m.running))
	}
	m.mu.Unlock()
	m.signal()
}

// batch returns an active batch as last read, or reads it.
func (m *Manager) batch(ctx context.Context, id string) *Batch {
	m.mu.Lock()
	b := m.info[id]
	m.mu.Unlock()
	if b != nil {
		return b
	}
	b, err := m.ledger.Get(ctx, id)
	if err != nil {
		return nil
	}
	return b
}

// runTask runs t's line; it reports whether the line stays held (waiting
// for room or a retry).
func (m *Manager) runTask(t *Task) bool {
	ctx := m.runCtx
	b := m.batch(ctx, t.Batch)
	if b == nil || Final(b.Status) {
		m.queue.Ack(context.Background(), *t)
		return false
	}
	if b.Ending != "" {
		m.endLine(b, t, "")
		return false
	}
	if has, err := m.queue.HasResult(ctx, *t); err == nil && has {
		// A line reclaimed after its replica stored the result but died
		// before the acknowledgement: it is not run again.
		m.queue.Ack(context.Background(), *t)
		return false
	}
	start := time.Now()
	var a attempt
	raw, err := m.files.ReadAt(ctx, b.InputFileID, t.Span.Off, t.Span.Len)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		m.log.Error("batch: reading an input line", zap.String("batch", b.ID), zap.Int("line", t.Line), zap.Error(err))
		a = m.failed(b, t, nil, "", &apiError{Status: 500, Type: "server_error", Code: "input_unavailable",
			Message: "The batch's input file cannot be read (deleted?)."}, err)
		a.retry = false
	} else {
		a = m.runLineSafe(ctx, b, t, raw)
	}
	switch {
	case a.abandoned:
		return false
	case a.wait > 0:
		m.hold(t, a.wait, a.why, t.try, true)
		return true
	case a.overload > 0:
		// A new try: the failed attempt was recorded under its own id.
		m.log.Info("batch line found the upstreams overloaded; running it again later", zap.String("batch", b.ID),
			zap.Int("line", t.Line), zap.Int("status", a.status), zap.Duration("in", a.overload), zap.Error(a.err))
		m.hold(t, a.overload, "upstream_overload", t.try+1, true)
		return true
	case a.retry && t.try < len(m.o.RetryBackoff):
		wait := m.o.RetryBackoff[t.try]
		m.log.Info("batch line failed; retrying", zap.String("batch", b.ID), zap.Int("line", t.Line),
			zap.Int("status", a.status), zap.Duration("in", wait), zap.Error(a.err))
		m.hold(t, wait, "retry", t.try+1, false)
		return true
	}
	m.flush()
	counts, ok := m.done(t, a.outcome, a.line)
	m.logLine(b, t, &a, start)
	if mt := m.o.Metrics; mt != nil {
		outcome := "completed"
		if a.outcome == Failed {
			outcome = "failed"
		}
		mt.BatchLines.WithLabelValues(outcome).Inc()
	}
	if ok && counts.Done() {
		m.finalizeAsync(b.ID)
	}
	return false
}

// runLineSafe runs a line; a panic in its journey fails that line (500)
// instead of the replica: otherwise the line, taken over by the next
// replica, would bring every replica down in turn.
func (m *Manager) runLineSafe(ctx context.Context, b *Batch, t *Task, raw []byte) (a attempt) {
	defer func() {
		if v := recover(); v != nil {
			m.log.Error("batch line panicked", zap.String("batch", b.ID), zap.Int("line", t.Line),
				zap.String("panic_type", fmt.Sprintf("%T", v)), zap.Stack("stack"))
			if mt := m.o.Metrics; mt != nil {
				mt.Panics.Inc()
			}
			env, _ := parseEnvelope(bytes.TrimSpace(raw))
			a = m.failed(b, t, env.customID, "", &apiError{Status: 500, Type: "server_error", Code: "internal_error",
				Message: "Internal error while running this request."}, nil)
			a.retry = false
		}
	}()
	return m.runLine(ctx, m.rt(), b, t, raw)
}

// hold keeps t to run again after wait; pause keeps the whole batch from
// taking new lines meanwhile (a limit or the budget refused: so would they).
func (m *Manager) hold(t *Task, wait time.Duration, why string, try int, pause bool) {
	now := time.Now()
	m.mu.Lock()
	t.try = try
	m.waiting = append(m.waiting, &waitingTask{t: t, due: now.Add(wait), why: why})
	if pause && now.Add(wait).After(m.paused[t.Batch]) {
		m.paused[t.Batch] = now.Add(wait)
	}
	m.mu.Unlock()
	if mt := m.o.Metrics; mt != nil {
		mt.BatchWaits.WithLabelValues(why).Inc()
	}
}

// flush waits until the usage records of the lines that ran were written
// (or spooled), so that a line's result is never stored before its bill.
func (m *Manager) flush() {
	rt := m.rt()
	if rt.Accounting == nil || rt.Accounting.Recorder == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Accounting.Recorder.Flush(ctx); err != nil {
		m.log.Warn("batch: usage records not flushed before the result", zap.Error(err))
	}
}

// done records a line's outcome, retrying while the store fails (the line
// ran and was billed: its result must not be lost if it can be helped; if
// it is, the line runs again and its record's id is counted once).
func (m *Manager) done(t *Task, kind Outcome, line []byte) (Counts, bool) {
	var err error
	for i, wait := 0, 200*time.Millisecond; i < 8; i, wait = i+1, wait*2 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var c Counts
		c, err = m.queue.Done(ctx, *t, kind, line)
		cancel()
		if err == nil {
			return c, true
		}
		time.Sleep(wait)
	}
	m.log.Error("batch: the result of a line could not be stored; it will run again", zap.String("batch", t.Batch),
		zap.Int("line", t.Line), zap.Error(err))
	return Counts{}, false
}

// endLine gives a line of a cancelled or expired batch its outcome without
// running it: skipped (cancelled), or failed with batch_expired (or
// insufficient_quota when the budget held it back).
func (m *Manager) endLine(b *Batch, t *Task, why string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if b.Ending == endCancel {
		c, err := m.queue.Done(ctx, *t, Skipped, nil)
		if err == nil {
			m.metricLine("skipped")
			if c.Done() {
				m.finalizeAsync(b.ID)
			}
		}
		return
	}
	var customID []byte
	if raw, err := m.files.ReadAt(ctx, b.InputFileID, t.Span.Off, t.Span.Len); err == nil {
		if env, lerr := parseEnvelope(raw); lerr == nil {
			customID = env.customID
		}
	}
	code, msg := "batch_expired", "This request could not be executed before the batch expired."
	if why == "budget" {
		code, msg = "insufficient_quota", "The team's budget was spent until the batch expired."
	}
	c, err := m.queue.Done(ctx, *t, Failed, appendLineErrorLine(nil, b.ID, t.Line, customID, code, msg))
	if err == nil {
		m.metricLine("failed")
		if c.Done() {
			m.finalizeAsync(b.ID)
		}
	}
}

func (m *Manager) metricLine(outcome string) {
	if mt := m.o.Metrics; mt != nil {
		mt.BatchLines.WithLabelValues(outcome).Inc()
	}
}

// drainEnding gives the lines of cancelled and expired batches their
// outcome: the new ones of the queue, the ones this replica holds back,
// and those a dead replica held.
func (m *Manager) drainEnding() {
	m.mu.Lock()
	var ending []*Batch
	for _, b := range m.info {
		if b.Ending != "" && !Final(b.Status) {
			ending = append(ending, b)
		}
	}
	type ended struct {
		b *Batch
		w *waitingTask
	}
	var mine []ended
	keep := m.waiting[:0]
	for _, w := range m.waiting {
		if b := m.info[w.t.Batch]; b != nil && b.Ending != "" {
			mine = append(mine, ended{b, w})
			delete(m.held, taskKey{w.t.Batch, w.t.Line})
		} else {
			keep = append(keep, w)
		}
	}
	m.waiting = keep
	m.mu.Unlock()
	for _, e := range mine {
		m.endLine(e.b, e.w.t, e.w.why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, b := range ending {
		for range 10 {
			tasks, err := m.queue.Take(ctx, b.ID, m.o.Consumer, 100)
			if err != nil {
				m.storeError("draining a batch", err)
				break
			}
			tasks = append(tasks, m.reclaim(ctx, b.ID, 100)...)
			if len(tasks) == 0 {
				break
			}
			for i := range tasks {
				if m.isHeld(&tasks[i]) {
					continue
				}
				m.endLine(b, &tasks[i], "")
			}
		}
	}
}

func (m *Manager) isHeld(t *Task) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.held[taskKey{t.Batch, t.Line}] != nil
}

// heartbeat touches the lines this replica holds, every third of
// reclaim_after, so that no other replica takes them over.
func (m *Manager) heartbeat() {
	defer m.wg.Done()
	every := max(m.o.ReclaimAfter/3, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.runCtx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		tasks := make([]Task, 0, len(m.held))
		for _, t := range m.held {
			tasks = append(tasks, *t)
		}
		m.mu.Unlock()
		if len(tasks) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		if err := m.queue.Touch(ctx, m.o.Consumer, tasks); err != nil {
			m.storeError("touching held lines", err)
		}
		cancel()
	}
}

var storeErrMu sync.Mutex
var storeErrAt time.Time

// storeError logs a failing store at most every 10 s.
func (m *Manager) storeError(what string, err error) {
	storeErrMu.Lock()
	defer storeErrMu.Unlock()
	if time.Since(storeErrAt) < 10*time.Second {
		return
	}
	storeErrAt = time.Now()
	m.log.Warn("batch store: "+what, zap.Error(err))
}

func (m *Manager) logLine(b *Batch, t *Task, a *attempt, start time.Time) {
	fields := []zap.Field{
		zap.String("batch", b.ID), zap.Int("line", t.Line), zap.String("request_id", callID(b.ID, t.Line, t.try)),
		zap.String("key", b.Key), zap.String("team", b.Team), zap.String("model", a.model),
		zap.String("provider", a.served.Provider), zap.Int("attempts", a.served.Attempts), zap.Int("status", a.status),
		zap.Float64("latency_ms", since(start)), zap.Int64("images", a.usage.Images),
		zap.Int64("prompt_tokens", a.usage.PromptTokens), zap.Int64("completion_tokens", a.usage.CompletionTokens),
		zap.Int64("cost_micros", a.cost), zap.String("replica", m.o.Consumer),
	}
	if a.errorCode != "" {
		fields = append(fields, zap.String("error_code", a.errorCode))
	}
	if a.err != nil {
		fields = append(fields, zap.String("error", a.err.Error()))
	}
	m.log.Info("batch line", fields...)
}
