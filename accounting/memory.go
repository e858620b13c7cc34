package accounting

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// DefaultUsagePath is the embedded store's file.
const DefaultUsagePath = "data/usage.jsonl"

// Durability of the embedded store's file: every applied record is written
// to the file (the kernel's page cache) before Apply returns, so a crash of
// the process loses nothing; the file is fsynced at most SyncInterval after
// a write, once SyncRecords records wait for it, and on Close, so a crash of
// the machine loses at most the last SyncInterval or SyncRecords records,
// whichever is fewer. An fsync costs the writer and the disk alike: up to
// about 10000 records a second the interval alone triggers it, ten times a
// second; the count bounds the loss of a replica busier than that.
const (
	SyncInterval = 100 * time.Millisecond
	SyncRecords  = 1024
)

// lineSizeHint is about the length of a record's line, to size buffers.
const lineSizeHint = 320

// Memory is the embedded Store of a single replica: totals and reservations
// in memory, every applied record appended as one JSON line to a file from
// which the totals are rebuilt on start. The file is compacted as it grows
// (compact.go): a snapshot of the totals and remembered ids replaces the
// records before it. Reservations live in memory only (they belong to
// requests in flight, which a restart ends).
type Memory struct {
	o    Options
	log  *zap.Logger
	path string

	mu       sync.Mutex
	f        *os.File // nil without a file, and once closed
	size     int64    // bytes of whole records in f
	unsynced int
	closed   bool
	fileErr  error // the last write or fsync error, nil once a write succeeds
	teams    map[string]map[string]*Bucket
	ids      map[idKey]int64 // applied ids -> the unix day of their record
	// order holds the same ids in the order they came, order[head:] the
	// remembered ones: the oldest are forgotten first. Entries are never
	// written over, so a compaction's frozen view stays as it was.
	order  []remembered
	head   int
	resv   map[string]*teamResv
	pruned time.Time
	// Ids forgotten before their window (MaxIDs), and when that was last
	// logged.
	forgotten    int64
	forgotWarned time.Time

	// Compaction (compact.go): the file is rewritten once its size reaches
	// compactAt, by one goroutine at a time; syncMu keeps an fsync off a
	// file being replaced.
	compactAt   int64
	compactMin  int64
	compacting  bool
	compactions sync.WaitGroup
	syncMu      sync.Mutex
	stopAt      compactStep // tests: where a compaction stops, as if killed

	kick chan struct{}
	stop chan struct{}
	done chan struct{}

	// writes and syncs count the system calls on the file, for the
	// benchmarks that weigh batching against them.
	writes, syncs atomic.Int64

	scratch atomic.Pointer[applyScratch]
	// Under mu: the periods of the last day a record was added to.
	lastDay     int64
	lastPeriods [3]string
}

type idKey struct{ team, id string }

type teamResv struct {
	byID map[string]memResv
	sum  int64
	// keys sums the reservations made against a key's own budget, by key.
	keys map[string]int64
	// due: no reservation expires before it, so the reservations are
	// scanned for expired ones only from then on, not at every Reserve
	// (which made a busy team's Reserve cost as much as its requests in
	// flight). A release leaves it early, which costs one scan at most.
	due time.Time
}

type memResv struct {
	micros  int64
	expires time.Time
	key     string // set when the key's own budget was checked
}

// drop takes r out of the sums.
func (tr *teamResv) drop(r memResv) {
	tr.sum -= r.micros
	if r.key != "" {
		if left := tr.keys[r.key] - r.micros; left > 0 {
			tr.keys[r.key] = left
		} else {
			delete(tr.keys, r.key)
		}
	}
}

// OpenMemory opens (creating it if need be) the embedded store persisted in
// path, rebuilding its totals from the records there; path "" keeps nothing
// on disk (tests). A last line cut short by a crash is dropped (it was never
// acknowledged); a malformed line elsewhere is logged and skipped. log may be
// nil.
func OpenMemory(path string, o Options, log *zap.Logger) (*Memory, error) {
	if log == nil {
		log = zap.NewNop()
	}
	m := &Memory{o: o.withDefaults(), log: log, path: path, teams: map[string]map[string]*Bucket{},
		ids: map[idKey]int64{}, resv: map[string]*teamResv{}, kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), compactMin: compactMinBytes}
	m.pruned = m.o.Now()
	if path == "" {
		close(m.done)
		return m, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("accounting: %w", err)
	}
	// A compaction cut short by a crash left its snapshot beside the
	// file, which is whole.
	if err := os.Remove(path + compactSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("accounting: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("accounting: %w", err)
	}
	n, err := m.load(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	m.f = f
	log.Info("accounting: embedded store loaded", zap.String("path", path), zap.Int("records", n),
		zap.Int64("bytes", m.size))
	go m.syncLoop()
	m.mu.Lock()
	m.compactDueLocked()
	m.mu.Unlock()
	return m, nil
}

// load applies the snapshot and every record of f and leaves m.size at the
// end of the last whole line, truncating a torn tail.
func (m *Memory) load(f *os.File) (int, error) {
	r := bufio.NewReaderSize(f, 1<<16)
	var off, head int64
	records := 0
	cutoff := m.o.Now().Add(-m.o.IDWindow)
	oldestDay := unixDay(cutoff) - 1 // as pruneLocked keeps them
	defer func() { m.compactAt = m.nextCompaction(head) }()
	for line := 1; ; line++ {
		b, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			if len(b) > 0 {
				m.log.Warn("accounting: dropping a torn last line of the usage file",
					zap.String("path", f.Name()), zap.Int("bytes", len(b)))
				if err := f.Truncate(off); err != nil {
					return records, fmt.Errorf("accounting: truncate torn tail of %s: %w", f.Name(), err)
				}
			}
			m.size = off
			return records, nil
		}
		if err != nil {
			return records, fmt.Errorf("accounting: read %s: %w", f.Name(), err)
		}
		off += int64(len(b))
		if isSnapshotLine(b) {
			if err := m.loadSnapshotLine(b, oldestDay); err != nil {
				m.log.Error("accounting: skipping a malformed snapshot line of the usage file",
					zap.String("path", f.Name()), zap.Int("line", line), zap.Error(err))
			}
			head = off
			continue
		}
		var rec Record
		if err := json.Unmarshal(bytes.TrimSpace(b), &rec); err != nil {
			m.log.Error("accounting: skipping a malformed line of the usage file", zap.String("path", f.Name()),
				zap.Int("line", line), zap.Error(err))
			continue
		}
		if err := rec.Validate(); err != nil {
			m.log.Error("accounting: skipping an invalid record of the usage file", zap.String("path", f.Name()),
				zap.Int("line", line), zap.Error(err))
			continue
		}
		if _, dup := m.ids[idKey{rec.Team, rec.ID}]; dup {
			continue
		}
		m.add(&rec, rec.Time.After(cutoff))
		records++
	}
}

// add counts rec; remember says whether its id is still inside the window.
func (m *Memory) add(rec *Record, remember bool) {
	buckets := m.teams[rec.Team]
	if buckets == nil {
		buckets = map[string]*Bucket{}
		m.teams[rec.Team] = buckets
	}
	d := rec.deltas()
	var kb [64]byte
	var sizeKey []byte // SizeKey without a string made for each bucket
	if rec.Size != "" && !rec.Failed() {
		sizeKey = append(append(append(kb[:0], rec.Size...), ' '), rec.Model...)
	}
	for _, p := range m.periodsLocked(rec.Time) {
		b := buckets[p]
		if b == nil {
			b = newBucket(p)
			buckets[p] = b
		}
		b.add(rec, &d, sizeKey)
	}
	if remember {
		m.rememberLocked(idKey{rec.Team, rec.ID}, unixDay(rec.Time))
	}
}

// periodsLocked is periods(t), formatted once a day: most records in a
// row share their day.
func (m *Memory) periodsLocked(t time.Time) [3]string {
	sec := t.Unix()
	day := sec / 86400
	if sec%86400 < 0 {
		day-- // the UTC day, before 1970 too
	}
	if m.lastPeriods[0] == "" || day != m.lastDay {
		m.lastDay, m.lastPeriods = day, periods(t)
	}
	return m.lastPeriods
}

// remembered is an id in the order of Memory.order.
type remembered struct {
	team, id string
	day      int64
}

// rememberLocked remembers an id that is not remembered yet.
func (m *Memory) rememberLocked(k idKey, day int64) {
	m.ids[k] = day
	m.order = append(m.order, remembered{k.team, k.id, day})
	if len(m.ids) > m.o.MaxIDs {
		m.forgetOldestLocked()
	}
}

// forgetOldestLocked forgets the oldest ids down to 15/16 of MaxIDs, so
// that the work is paid once per MaxIDs/16 records.
func (m *Memory) forgetOldestLocked() {
	n := len(m.ids) - (m.o.MaxIDs - m.o.MaxIDs/16)
	for _, r := range m.order[m.head : m.head+n] {
		delete(m.ids, idKey{r.team, r.id})
	}
	m.head += n
	if m.head > len(m.order)/2 {
		// A copy frees the forgotten strings; a frozen view keeps the old
		// array until its compaction ends.
		m.order, m.head = append([]remembered(nil), m.order[m.head:]...), 0
	}
	m.forgotten += int64(n)
	if now := time.Now(); now.Sub(m.forgotWarned) >= time.Hour {
		m.forgotWarned = now
		m.log.Warn("accounting: the embedded store forgets record ids before their window to bound its memory: "+
			"a replay of an older record counts again",
			zap.Int("remembered", len(m.ids)), zap.Int64("forgotten", m.forgotten),
			zap.Duration("window", m.o.IDWindow))
	}
}

func unixDay(t time.Time) int64 { return t.Unix() / 86400 }

// Apply implements Store.
func (m *Memory) Apply(ctx context.Context, rec Record) (bool, error) {
	n, err := m.ApplyBatch(ctx, []Record{rec})
	return n == 1, err
}

// ApplyBatch implements Store. The batch's new records go to the file in
// one write, so a busy replica pays one system call per batch, not per
// record. Records are validated and encoded before the lock is taken; an
// invalid one stops the batch there, as applying them one by one would.
func (m *Memory) ApplyBatch(_ context.Context, recs []Record) (int, error) {
	sc := m.scratch.Swap(nil)
	if sc == nil {
		sc = &applyScratch{seen: map[idKey]bool{}}
	}
	defer m.putScratch(sc)
	lines, ends := sc.lines[:0], sc.ends[:0] // ends[i]: where recs[i]'s line ends in lines
	var stopErr error
	valid := recs
	for i := range recs {
		if err := recs[i].Validate(); err != nil {
			valid, stopErr = recs[:i], err
			break
		}
		if m.path == "" {
			continue
		}
		rec := recs[i]
		rec.Time = rec.Time.UTC()
		var err error
		if lines, err = appendRecordJSON(lines, &rec); err != nil {
			valid, stopErr = recs[:i], fmt.Errorf("accounting: encode %s: %w", rec.ID, err)
			break
		}
		lines = append(lines, '\n')
		ends = append(ends, len(lines))
	}
	sc.lines, sc.ends = lines, ends

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, errors.New("accounting: store closed")
	}
	// Keep the lines of records not applied before (nor earlier in this
	// batch), compacting them in place.
	fresh := slices.Grow(sc.fresh[:0], len(valid))[:len(valid)]
	sc.fresh = fresh
	kept, start := 0, 0
	for i := range valid {
		k := idKey{valid[i].Team, valid[i].ID}
		_, dup := m.ids[k]
		if !dup && len(valid) > 1 {
			dup = sc.seen[k]
			sc.seen[k] = true
		}
		if m.path != "" {
			if !dup {
				kept += copy(lines[kept:], lines[start:ends[i]])
			}
			start = ends[i]
		}
		fresh[i] = !dup
	}
	if kept > 0 {
		if err := m.writeLocked(lines[:kept]); err != nil {
			return 0, err
		}
	}
	applied := 0
	for i := range valid {
		rec := &valid[i]
		if fresh[i] {
			r := *rec
			r.Time = r.Time.UTC()
			m.add(&r, true)
			applied++
		}
		m.releaseLocked(rec.Team, rec.ID)
	}
	m.pruneLocked()
	return applied, stopErr
}

// applyScratch is ApplyBatch's working memory, kept for the next batch:
// the Recorder applies one at a time, so it is seldom allocated again.
type applyScratch struct {
	lines []byte
	ends  []int
	fresh []bool
	seen  map[idKey]bool
}

// putScratch keeps sc for the next batch, unless a batch far above the
// Recorder's made it large.
func (m *Memory) putScratch(sc *applyScratch) {
	if cap(sc.lines) > 1<<20 {
		return
	}
	clear(sc.seen) // its keys would keep the batch's strings alive
	m.scratch.Store(sc)
}

// writeLocked appends whole lines to the file.
func (m *Memory) writeLocked(lines []byte) error {
	if m.f == nil { // a compaction could not reopen it
		if err := m.reopenLocked(); err != nil {
			return err
		}
	}
	if n, err := m.f.Write(lines); err != nil {
		// A partial line would glue itself to the next one: cut it off, so
		// the file stays whole lines.
		if n > 0 {
			if terr := m.f.Truncate(m.size); terr != nil {
				err = errors.Join(err, terr)
			}
		}
		m.fileErr = err
		return fmt.Errorf("accounting: write %s: %w", m.path, err)
	}
	m.writes.Add(1)
	m.fileErr = nil
	m.size += int64(len(lines))
	if m.unsynced += bytes.Count(lines, []byte{'\n'}); m.unsynced >= SyncRecords {
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
	m.compactDueLocked()
	return nil
}

// pruneLocked forgets, once an hour, ids older than the id window and daily
// buckets older than the retention, as Redis expires them.
func (m *Memory) pruneLocked() {
	now := m.o.Now()
	if now.Sub(m.pruned) < time.Hour {
		return
	}
	m.pruned = now
	oldID := unixDay(now.Add(-m.o.IDWindow)) - 1
	live := m.order[m.head:]
	if slices.ContainsFunc(live, func(r remembered) bool { return r.day < oldID }) {
		kept := make([]remembered, 0, len(live))
		for _, r := range live {
			if r.day < oldID {
				delete(m.ids, idKey{r.team, r.id})
			} else {
				kept = append(kept, r)
			}
		}
		m.order, m.head = kept, 0
	}
	oldDay := Day(now.Add(-m.o.DayRetention - 24*time.Hour))
	for _, buckets := range m.teams {
		for p := range buckets {
			if len(p) == len(time.DateOnly) && p < oldDay {
				delete(buckets, p)
			}
		}
	}
}

func (m *Memory) syncLoop() {
	defer close(m.done)
	t := time.NewTicker(SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		case <-m.kick:
		}
		m.sync()
	}
}

func (m *Memory) sync() {
	m.syncMu.Lock()
	defer m.syncMu.Unlock()
	m.mu.Lock()
	f, n := m.f, m.unsynced
	m.unsynced = 0
	m.mu.Unlock()
	if f == nil || n == 0 {
		return
	}
	m.syncs.Add(1)
	if err := f.Sync(); err != nil {
		m.log.Error("accounting: fsync of the usage file failed: recent records may not survive a crash of the machine",
			zap.String("path", m.path), zap.Error(err))
		m.mu.Lock()
		m.fileErr = err
		m.unsynced += n
		m.mu.Unlock()
	}
}

// Healthy reports whether the usage file takes writes.
func (m *Memory) Healthy() (bool, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fileErr != nil {
		return false, "accounting: usage file " + m.path + ": " + m.fileErr.Error()
	}
	return true, ""
}

// Reserve implements Store.
func (m *Memory) Reserve(_ context.Context, a Ask) (Reservation, error) {
	now := m.o.Now()
	r := newReservation(&a, now)
	if !r.budgeted() {
		return r, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	tr := m.teamResvLocked(a.Team, now)
	prev, had := tr.byID[a.ID]
	if r.Period != "" {
		if bk := m.teams[a.Team][r.Period]; bk != nil {
			r.SpentMicros = bk.Team.CostMicros
		}
		r.ReservedMicros = tr.sum
		if had {
			r.ReservedMicros -= prev.micros
		}
	}
	if r.Key != "" {
		if t := m.teams[a.Team][r.KeyPeriod].keyTotals(r.Key); t != nil {
			r.KeySpentMicros = t.CostMicros
		}
		r.KeyReservedMicros = tr.keys[r.Key]
		if had && prev.key == r.Key {
			r.KeyReservedMicros -= prev.micros
		}
	}
	if err := r.over(); err != nil {
		return r, err
	}
	if had {
		tr.drop(prev)
	}
	tr.sum += r.Micros
	if r.Key != "" {
		if tr.keys == nil {
			tr.keys = map[string]int64{}
		}
		tr.keys[r.Key] += r.Micros
	}
	exp := now.Add(m.o.ReservationTTL)
	tr.byID[a.ID] = memResv{r.Micros, exp, r.Key}
	if len(tr.byID) == 1 || exp.Before(tr.due) {
		tr.due = exp
	}
	return r, nil
}

// teamResvLocked returns the team's reservations without the expired ones.
func (m *Memory) teamResvLocked(team string, now time.Time) *teamResv {
	tr := m.resv[team]
	if tr == nil {
		tr = &teamResv{byID: map[string]memResv{}}
		m.resv[team] = tr
	}
	if now.Before(tr.due) || len(tr.byID) == 0 {
		return tr
	}
	var due time.Time
	for id, r := range tr.byID {
		if !now.Before(r.expires) {
			delete(tr.byID, id)
			tr.drop(r)
		} else if due.IsZero() || r.expires.Before(due) {
			due = r.expires
		}
	}
	tr.due = due
	return tr
}

func (m *Memory) releaseLocked(team, id string) {
	tr := m.resv[team]
	if tr == nil {
		return
	}
	if r, ok := tr.byID[id]; ok {
		delete(tr.byID, id)
		tr.drop(r)
	}
}

// Release implements Store.
func (m *Memory) Release(_ context.Context, r Reservation) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.releaseLocked(r.Team, r.ID)
	return nil
}

// Reserved implements Store.
func (m *Memory) Reserved(_ context.Context, team, key string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tr := m.teamResvLocked(team, m.o.Now())
	if key != "" {
		return tr.keys[key], nil
	}
	return tr.sum, nil
}

// Read implements Store.
func (m *Memory) Read(_ context.Context, team string, periods []string) ([]*Bucket, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Bucket, len(periods))
	for i, p := range periods {
		out[i] = m.teams[team][p].clone(p)
	}
	return out, nil
}

// keyTotals is the totals of key in b; nil when b is nil or has none.
func (b *Bucket) keyTotals(key string) *Totals {
	if b == nil {
		return nil
	}
	return b.Keys[key]
}

// clone copies b (an empty bucket of period p when b is nil).
func (b *Bucket) clone(p string) *Bucket {
	c := newBucket(p)
	if b == nil {
		return c
	}
	c.Team = b.Team
	for _, pair := range [][2]map[string]*Totals{{c.Keys, b.Keys}, {c.Models, b.Models}, {c.Providers, b.Providers}, {c.Sizes, b.Sizes}} {
		for name, t := range pair[1] {
			tc := *t
			pair[0][name] = &tc
		}
	}
	return c
}

// Teams implements Store.
func (m *Memory) Teams(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	teams := make([]string, 0, len(m.teams))
	for t := range m.teams {
		teams = append(teams, t)
	}
	slices.Sort(teams)
	return teams, nil
}

// Close implements Store: the file is fsynced and closed; later Applies
// fail.
func (m *Memory) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	if m.path == "" {
		return nil
	}
	close(m.stop)
	<-m.done
	m.compactions.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.f == nil { // a compaction could not reopen it: nothing is pending
		return nil
	}
	err := m.f.Sync()
	if cerr := m.f.Close(); err == nil {
		err = cerr
	}
	m.f = nil
	if err != nil {
		return fmt.Errorf("accounting: close %s: %w", m.path, err)
	}
	return nil
}
