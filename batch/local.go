package batch

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Local is the embedded Store, for one replica (no redis block): in dir,
// each batch is <id>.json (its state, rewritten atomically), <id>.spans (where
// its lines are in the input file) and <id>.results, an append-only file of
// outcomes, one per line, synced before the line counts as done. The
// results file is the queue's acknowledgement log: at start, a batch's
// queue is rebuilt as its lines without an outcome, so lines that were
// running when the process stopped run again (their usage records carry the
// same ids, counted once).
type Local struct {
	dir string
	log *zap.Logger

	mu      sync.Mutex
	batches map[string]*localBatch
	locks   map[string]localLock
	seq     int
}

type localBatch struct {
	b       *Batch
	spans   []Span
	outcome []Outcome    // per line, 0 while none, 0 while none
	taken   map[int]bool // lines handed out and not yet done
	next    int          // lines before it were all handed out once
	res     *os.File     // results, opened for appending
}

type localLock struct {
	holder string
	until  time.Time
}

// OpenLocal opens (creating) the store in dir and rebuilds its batches.
func OpenLocal(dir string, log *zap.Logger) (*Local, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("batch store: %w", err)
	}
	s := &Local{dir: dir, log: log, batches: map[string]*localBatch{}, locks: map[string]localLock{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("batch store: %w", err)
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !ValidBatchID(id) {
			continue
		}
		if err := s.load(id); err != nil {
			return nil, fmt.Errorf("batch store: %s: %w", id, err)
		}
	}
	return s, nil
}

func (s *Local) path(id, ext string) string { return filepath.Join(s.dir, id+ext) }

func (s *Local) load(id string) error {
	data, err := os.ReadFile(s.path(id, ".json"))
	if err != nil {
		return err
	}
	b, err := decodeState(data)
	if err != nil {
		return err
	}
	lb := &localBatch{b: b, taken: map[int]bool{}}
	s.batches[id] = lb
	if Final(b.Status) {
		// Finished: what a crash after the last state write left behind.
		os.Remove(s.path(id, ".spans"))
		os.Remove(s.path(id, ".results"))
		return nil
	}
	raw, err := os.ReadFile(s.path(id, ".spans"))
	if err != nil {
		return err
	}
	lb.spans = decodeSpans(raw)
	lb.outcome = make([]Outcome, len(lb.spans))
	b.Counts = Counts{Total: int64(len(lb.spans))}
	if err := s.replay(lb); err != nil {
		return err
	}
	lb.res, err = os.OpenFile(s.path(id, ".results"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	return err
}

// replay counts the outcomes in a batch's results file; a record cut short
// by a crash is removed.
func (s *Local) replay(lb *localBatch) error {
	path := s.path(lb.b.ID, ".results")
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	var good int64
	for {
		rec, err := r.ReadBytes('\n')
		if err == io.EOF {
			if len(rec) > 0 {
				s.log.Warn("batch store: dropping a results record cut short", zap.String("batch", lb.b.ID))
				return os.Truncate(path, good)
			}
			return nil
		}
		if err != nil {
			return err
		}
		good += int64(len(rec))
		line, kind, _, ok := parseRecord(rec)
		if !ok || line < 0 || line >= len(lb.outcome) {
			return fmt.Errorf("malformed results record at offset %d", good-int64(len(rec)))
		}
		if lb.outcome[line] == 0 {
			lb.outcome[line] = kind
			count(&lb.b.Counts, kind)
		}
	}
}

// A results record is "<line> <kind> <file line>\n".
func appendRecord(b []byte, line int, kind Outcome, out []byte) []byte {
	b = strconv.AppendInt(b, int64(line), 10)
	b = append(b, ' ', byte(kind), ' ')
	b = append(b, out...)
	return append(b, '\n')
}

func parseRecord(rec []byte) (line int, kind Outcome, out []byte, ok bool) {
	rec = bytes.TrimSuffix(rec, []byte("\n"))
	num, rest, ok1 := bytes.Cut(rec, []byte(" "))
	if !ok1 || len(rest) < 2 || rest[1] != ' ' {
		return 0, 0, nil, false
	}
	n, err := strconv.Atoi(string(num))
	if err != nil {
		return 0, 0, nil, false
	}
	return n, Outcome(rest[0]), rest[2:], true
}

func count(c *Counts, kind Outcome) {
	switch kind {
	case Completed:
		c.Completed++
	case Failed:
		c.Failed++
	case Skipped:
		c.Skipped++
	}
}

func encodeSpans(lines []Span) []byte {
	b := make([]byte, 12*len(lines))
	for i, sp := range lines {
		binary.BigEndian.PutUint64(b[12*i:], uint64(sp.Off))
		binary.BigEndian.PutUint32(b[12*i+8:], uint32(sp.Len))
	}
	return b
}

func decodeSpans(b []byte) []Span {
	out := make([]Span, len(b)/12)
	for i := range out {
		out[i] = Span{Off: int64(binary.BigEndian.Uint64(b[12*i:])), Len: int(binary.BigEndian.Uint32(b[12*i+8:]))}
	}
	return out
}

func (s *Local) tmp() string {
	s.seq++
	return filepath.Join(s.dir, fmt.Sprintf(".tmp-%d-%d", os.Getpid(), s.seq))
}

// Create implements Store.
func (s *Local) Create(_ context.Context, b *Batch, lines []Span) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.batches[b.ID]; dup {
		return fmt.Errorf("batch store: %s exists", b.ID)
	}
	c := *b
	c.Counts = Counts{Total: int64(len(lines))}
	if err := writeAtomic(s.path(b.ID, ".spans"), encodeSpans(lines), s.tmp()); err != nil {
		return fmt.Errorf("batch store: %w", err)
	}
	res, err := os.OpenFile(s.path(b.ID, ".results"), os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("batch store: %w", err)
	}
	if err := writeAtomic(s.path(b.ID, ".json"), encodeState(&c), s.tmp()); err != nil {
		res.Close()
		return fmt.Errorf("batch store: %w", err)
	}
	s.batches[b.ID] = &localBatch{b: &c, spans: lines, outcome: make([]Outcome, len(lines)), taken: map[int]bool{}, res: res}
	return nil
}

// Get implements Store.
func (s *Local) Get(_ context.Context, id string) (*Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lb := s.batches[id]
	if lb == nil {
		return nil, ErrNotFound
	}
	c := *lb.b
	return &c, nil
}

// List implements Store.
func (s *Local) List(_ context.Context, owner, after string, limit int) ([]*Batch, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, lb := range s.batches {
		if (owner == "" || lb.b.Owner == owner) && (after == "" || id < after) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	more := len(ids) > limit
	if more {
		ids = ids[:limit]
	}
	out := make([]*Batch, len(ids))
	for i, id := range ids {
		c := *s.batches[id].b
		out[i] = &c
	}
	return out, more, nil
}

// Update implements Store.
func (s *Local) Update(_ context.Context, id string, fn func(b *Batch) bool) (*Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lb := s.batches[id]
	if lb == nil {
		return nil, ErrNotFound
	}
	c := *lb.b
	if !fn(&c) {
		c = *lb.b
		return &c, nil
	}
	c.Counts = lb.b.Counts
	if err := writeAtomic(s.path(id, ".json"), encodeState(&c), s.tmp()); err != nil {
		return nil, fmt.Errorf("batch store: %w", err)
	}
	*lb.b = c
	return &c, nil
}

// Active implements Store.
func (s *Local) Active(context.Context) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, lb := range s.batches {
		if !Final(lb.b.Status) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// Take implements Store.
func (s *Local) Take(_ context.Context, id, _ string, n int) ([]Task, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lb := s.batches[id]
	if lb == nil || lb.spans == nil {
		return nil, nil
	}
	var out []Task
	for ; lb.next < len(lb.spans) && len(out) < n; lb.next++ {
		i := lb.next
		if lb.outcome[i] != 0 || lb.taken[i] {
			continue
		}
		lb.taken[i] = true
		out = append(out, Task{Batch: id, Line: i, Span: lb.spans[i]})
	}
	return out, nil
}

// Reclaim implements Store: one replica has nobody to take lines from.
func (s *Local) Reclaim(context.Context, string, string, time.Duration, int) ([]Task, error) {
	return nil, nil
}

// Touch implements Store; nothing expires here.
func (s *Local) Touch(context.Context, string, []Task) error { return nil }

// HasResult implements Store.
func (s *Local) HasResult(_ context.Context, t Task) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lb := s.batches[t.Batch]
	if lb == nil || lb.outcome == nil || t.Line >= len(lb.outcome) {
		return false, ErrNotFound
	}
	return lb.outcome[t.Line] != 0, nil
}

// Done implements Store: the record is synced to disk before the line
// counts.
func (s *Local) Done(_ context.Context, t Task, kind Outcome, line []byte) (Counts, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lb := s.batches[t.Batch]
	if lb == nil || lb.res == nil || t.Line >= len(lb.outcome) {
		return Counts{}, ErrNotFound
	}
	if lb.outcome[t.Line] == 0 {
		rec := appendRecord(make([]byte, 0, len(line)+16), t.Line, kind, line)
		if _, err := lb.res.Write(rec); err != nil {
			return lb.b.Counts, fmt.Errorf("batch store: results of %s: %w", t.Batch, err)
		}
		if err := lb.res.Sync(); err != nil {
			return lb.b.Counts, fmt.Errorf("batch store: results of %s: %w", t.Batch, err)
		}
		lb.outcome[t.Line] = kind
		count(&lb.b.Counts, kind)
	}
	delete(lb.taken, t.Line)
	return lb.b.Counts, nil
}

// Ack implements Store.
func (s *Local) Ack(_ context.Context, t Task) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lb := s.batches[t.Batch]; lb != nil {
		delete(lb.taken, t.Line)
	}
	return nil
}

// Results implements Store.
func (s *Local) Results(_ context.Context, id string, fn func(kind Outcome, line []byte) error) error {
	f, err := os.Open(s.path(id, ".results"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("batch store: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	seen := map[int]bool{}
	for {
		rec, err := r.ReadBytes('\n')
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("batch store: results of %s: %w", id, err)
		}
		line, kind, out, ok := parseRecord(rec)
		if !ok || seen[line] {
			continue
		}
		seen[line] = true
		if err := fn(kind, out); err != nil {
			return err
		}
	}
}

// Drop implements Store.
func (s *Local) Drop(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	lb := s.batches[id]
	if lb == nil {
		return nil
	}
	if lb.res != nil {
		lb.res.Close()
		lb.res = nil
	}
	lb.spans, lb.outcome, lb.taken = nil, nil, map[int]bool{}
	os.Remove(s.path(id, ".spans"))
	os.Remove(s.path(id, ".results"))
	return nil
}

// SweepFinished implements Store.
func (s *Local) SweepFinished(_ context.Context, before time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	n := 0
	for id, lb := range s.batches {
		end := endedAt(lb.b)
		if !Final(lb.b.Status) || end == 0 || end >= before.Unix() {
			continue
		}
		if err := os.Remove(s.path(id, ".json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("batch store: %w", err))
			continue
		}
		if lb.res != nil {
			lb.res.Close()
		}
		os.Remove(s.path(id, ".spans"))
		os.Remove(s.path(id, ".results"))
		delete(s.batches, id)
		delete(s.locks, id)
		n++
	}
	return n, errors.Join(errs...)
}

// Lock implements Store.
func (s *Local) Lock(_ context.Context, id, holder string, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if l, ok := s.locks[id]; ok && l.holder != holder && now.Before(l.until) {
		return false, nil
	}
	s.locks[id] = localLock{holder: holder, until: now.Add(ttl)}
	return true, nil
}

// Unlock implements Store.
func (s *Local) Unlock(_ context.Context, id, holder string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.locks[id]; ok && l.holder == holder {
		delete(s.locks, id)
	}
	return nil
}

// Close implements Store.
func (s *Local) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, lb := range s.batches {
		if lb.res != nil {
			lb.res.Close()
			lb.res = nil
		}
	}
	return nil
}
