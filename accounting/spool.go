package accounting

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"
)

// spool is the Recorder's local file of records the store did not take yet:
// one JSON line per record, appended, fsynced in batches, read back in order
// and truncated only once every line in it has been applied. Records the
// file itself refuses (full disk, unwritable directory) are held in memory,
// up to a bound.
type spool struct {
	path    string
	log     *zap.Logger
	maxHeld int

	mu       sync.Mutex
	f        *os.File
	size     int64 // bytes of whole lines in f
	off      int64 // bytes of f already applied by this process
	lines    int64 // lines in f
	done     int64 // lines before off
	unsynced int
	held     []Record // records f would not take
	err      error    // the last error writing f; nil once a write succeeds
	lastOpen time.Time
}

func newSpool(path string, maxHeld int, log *zap.Logger) *spool {
	s := &spool{path: path, log: log, maxHeld: maxHeld}
	s.mu.Lock()
	s.openLocked()
	s.mu.Unlock()
	return s
}

// openLocked opens the file if it is not open, at most once a second after a
// failure. A previous process's lines are kept (they are replayed); a torn
// last line, which no caller was told was written, is cut off.
func (s *spool) openLocked() bool {
	if s.f != nil {
		return true
	}
	if time.Since(s.lastOpen) < time.Second && s.err != nil {
		return false
	}
	s.lastOpen = time.Now()
	err := os.MkdirAll(filepath.Dir(s.path), 0o750)
	var f *os.File
	if err == nil {
		f, err = os.OpenFile(s.path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640)
	}
	if err == nil {
		err = s.scanLocked(f)
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		s.failLocked(fmt.Errorf("open spool: %w", err))
		return false
	}
	s.f = f
	return true
}

// scanLocked counts the whole lines of f and truncates a torn tail.
func (s *spool) scanLocked(f *os.File) error {
	buf := make([]byte, 1<<16)
	var size, whole, lines int64
	for {
		n, err := f.ReadAt(buf, size)
		for i, c := range buf[:n] {
			if c == '\n' {
				lines++
				whole = size + int64(i) + 1
			}
		}
		size += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if whole < size {
		s.log.Warn("accounting: dropping a torn last line of the spool", zap.String("path", s.path),
			zap.Int64("bytes", size-whole))
		if err := f.Truncate(whole); err != nil {
			return err
		}
	}
	s.size, s.off, s.lines, s.done = whole, 0, lines, 0
	if lines > 0 {
		s.log.Warn("accounting: spool holds records of a previous run; replaying them",
			zap.String("path", s.path), zap.Int64("records", lines))
	}
	return nil
}

// failLocked records a write failure, loudly when it is a new one.
func (s *spool) failLocked(err error) {
	if s.err == nil || s.err.Error() != err.Error() {
		s.log.Error("accounting: spool file unwritable: records are held in memory until it is fixed",
			zap.String("path", s.path), zap.Error(err), zap.Int("held", len(s.held)))
	}
	s.err = err
}

// add appends recs; it returns how many it had to drop (nothing could keep
// them: the file refused and memory is full).
func (s *spool) add(recs []Record) (dropped int) {
	b := make([]byte, 0, len(recs)*lineSizeHint)
	for i := range recs {
		var err error
		if b, err = appendRecordJSON(b, &recs[i]); err != nil { // a time RFC 3339 cannot hold
			s.log.Error("accounting: cannot encode a record", zap.String("request_id", recs[i].ID), zap.Error(err))
			dropped++
			continue
		}
		b = append(b, '\n')
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.held) > 0 && s.openLocked() {
		// The file takes writes again? Move what memory holds first.
		held := s.held
		s.held = nil
		if s.writeLocked(held) != nil {
			s.held = held
		}
	}
	if s.f != nil || s.openLocked() {
		if err := s.writeRawLocked(b, len(recs)-dropped); err == nil {
			return dropped
		}
	}
	room := s.maxHeld - len(s.held)
	keep := recs
	if len(keep) > room {
		keep = recs[:max(room, 0)]
		dropped += len(recs) - len(keep)
		s.log.Error("accounting: records lost: the spool is unwritable and the memory backlog is full",
			zap.String("path", s.path), zap.Int("lost", len(recs)-len(keep)), zap.Int("held", len(s.held)))
	}
	s.held = append(s.held, keep...)
	return dropped
}

func (s *spool) writeLocked(recs []Record) error {
	b := make([]byte, 0, len(recs)*lineSizeHint)
	n := 0
	for i := range recs {
		// One that cannot be encoded was counted lost when it came.
		if line, err := appendRecordJSON(b, &recs[i]); err == nil {
			b = append(line, '\n')
			n++
		}
	}
	return s.writeRawLocked(b, n)
}

func (s *spool) writeRawLocked(b []byte, n int) error {
	if len(b) == 0 {
		return nil
	}
	w, err := s.f.Write(b)
	if err != nil {
		if w > 0 {
			// Never leave half a line: the next one would be glued to it.
			if terr := s.f.Truncate(s.size); terr != nil {
				err = errors.Join(err, terr)
			}
		}
		s.failLocked(fmt.Errorf("write spool: %w", err))
		return err
	}
	if s.err != nil {
		s.log.Info("accounting: spool file writable again", zap.String("path", s.path))
	}
	s.err = nil
	s.size += int64(w)
	s.lines += int64(n)
	s.unsynced += n
	return nil
}

// sync fsyncs the file if lines were added since the last time.
func (s *spool) sync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil || s.unsynced == 0 {
		return
	}
	if err := s.f.Sync(); err != nil {
		s.failLocked(fmt.Errorf("fsync spool: %w", err))
		return
	}
	s.unsynced = 0
}

// unsyncedLines is how many lines await an fsync.
func (s *spool) unsyncedLines() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unsynced
}

// pending is the number of records not applied yet.
func (s *spool) pending() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lines - s.done + int64(len(s.held))
}

// health is the number of records held in memory and the last error of
// the file, nil when it takes writes.
func (s *spool) health() (held int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held), s.err
}

// next reads up to max records after the applied offset. end is the offset
// after them (advance to it once they are applied); bad counts malformed
// lines skipped on the way (lost: nothing can apply them).
func (s *spool) next(max int) (recs []Record, end int64, bad int, err error) {
	s.mu.Lock()
	f, off, size := s.f, s.off, s.size
	s.mu.Unlock()
	if f == nil || off >= size {
		return nil, off, 0, nil
	}
	chunk := int64(64 << 10)
	for {
		n := min(chunk, size-off)
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
			return nil, off, 0, fmt.Errorf("read spool: %w", err)
		}
		end = off
		for len(recs) < max {
			i := bytes.IndexByte(buf[end-off:], '\n')
			if i < 0 {
				break
			}
			line := buf[end-off : end-off+int64(i)]
			end += int64(i) + 1
			var r Record
			if err := json.Unmarshal(line, &r); err != nil || r.Validate() != nil {
				s.log.Error("accounting: skipping a malformed spool line", zap.String("path", s.path),
					zap.Int64("offset", end-int64(i)-1))
				bad++
				continue
			}
			recs = append(recs, r)
		}
		if end > off || n == size-off {
			return recs, end, bad, nil
		}
		chunk *= 2 // a line longer than the chunk
	}
}

// advance marks the file up to end (n lines) as applied.
func (s *spool) advance(end int64, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if end > s.off {
		s.off = end
		s.done += int64(n)
	}
}

// heldBatch returns up to max held records (still held until dropHeld).
func (s *spool) heldBatch(max int) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.held[:min(max, len(s.held))]...)
}

func (s *spool) dropHeld(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held = s.held[min(n, len(s.held)):]
}

// finish truncates the file once every line in it was applied and nothing
// is held; it reports whether the spool is empty. The check and the
// truncation are under the lock, so a line appended meanwhile is never cut.
func (s *spool) finish() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.held) > 0 {
		return false
	}
	if s.f == nil || s.size == 0 {
		return true
	}
	if s.off < s.size {
		return false
	}
	if err := s.f.Truncate(0); err != nil {
		// Everything in the file was applied: count it done and append
		// after it. A later run replays these lines again, and the
		// store counts them once.
		s.log.Error("accounting: cannot truncate the replayed spool", zap.String("path", s.path), zap.Error(err))
		s.done = s.lines
		return true
	}
	if err := s.f.Sync(); err != nil {
		s.failLocked(fmt.Errorf("fsync spool: %w", err))
	}
	s.size, s.off, s.lines, s.done, s.unsynced = 0, 0, 0, 0, 0
	return true
}

// close fsyncs and closes the file; the spool reopens it if written again.
func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Sync()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	s.f = nil
	return err
}
