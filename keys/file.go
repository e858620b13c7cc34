package keys

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"nanogate/internal/atomicfile"
)

// File is the embedded Store of a single replica: everything in memory,
// every change appended as one JSON line to a file (fsynced before Apply
// returns: changes are rare and each one is an admin's) and replayed on
// start. The last uses go to it too, a line a minute while run-time keys
// are used, so it is compacted: once it outgrows twice its state (and
// compactMinBytes), it is rewritten as that state, the audit trail
// included, without the marks that ended.
type File struct {
	mu    sync.Mutex
	path  string   // "" keeps nothing on disk
	f     *os.File // nil while the file must be opened again
	log   *zap.Logger
	data  *Data
	audit []Event
	marks map[string]time.Time // Mark's ids, until when (zero: for ever)

	size       int64 // bytes in the file
	compactAt  int64
	compactMin int64
}

// compactMinBytes is the size below which the file is never compacted.
const compactMinBytes = 1 << 20

var _ Store = (*File)(nil)

// fileLine is one line of the file: a change with its event, or last uses.
type fileLine struct {
	Version    int64            `json:"v,omitempty"`
	Team       *Team            `json:"team,omitempty"`
	DeleteTeam string           `json:"delete_team,omitempty"`
	Key        *Key             `json:"key,omitempty"`
	Event      *Event           `json:"event,omitempty"`
	Used       map[string]int64 `json:"used,omitempty"`
	Mark       string           `json:"mark,omitempty"`
	Until      time.Time        `json:"until,omitzero"`
}

// OpenFile opens (creating it if need be) the store kept in path; path ""
// keeps nothing on disk (tests). A last line cut short by a crash is
// dropped (its change was never acknowledged); a malformed line elsewhere
// is logged and skipped. log may be nil.
func OpenFile(path string, log *zap.Logger) (*File, error) {
	if log == nil {
		log = zap.NewNop()
	}
	s := &File{path: path, log: log, data: newData(), marks: map[string]time.Time{}, compactMin: compactMinBytes}
	if path == "" {
		return s, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	r := bufio.NewReader(f)
	var good int64
	for n := 1; ; n++ {
		b, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			if len(bytes.TrimSpace(b)) > 0 {
				log.Warn("keys: dropping a torn last line", zap.String("path", path), zap.Int("line", n))
			}
			break
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("keys: read %s: %w", path, err)
		}
		good += int64(len(b))
		var l fileLine
		if err := json.Unmarshal(b, &l); err != nil {
			log.Error("keys: skipping a malformed line", zap.String("path", path), zap.Int("line", n))
			continue
		}
		s.applyLine(&l)
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, fmt.Errorf("keys: %w", err)
	}
	s.f, s.size = f, good
	log.Info("keys: embedded store loaded", zap.String("path", path), zap.Int("teams", len(s.data.Teams)),
		zap.Int("keys", len(s.data.Keys)))
	s.compactAt = s.compactMin // the state's size is known once it is written
	s.maybeCompact()
	return s, nil
}

func (s *File) applyLine(l *fileLine) {
	if l.Version > s.data.Version {
		s.data.Version = l.Version
	}
	switch {
	case l.Team != nil:
		s.data.Teams[l.Team.Name] = l.Team
	case l.DeleteTeam != "":
		delete(s.data.Teams, l.DeleteTeam)
	case l.Key != nil:
		s.data.Keys[l.Key.ID] = l.Key
	}
	if l.Event != nil {
		s.audit = append(s.audit, *l.Event)
	}
	for id, t := range l.Used {
		s.data.Used[id] = max(s.data.Used[id], t)
	}
	if l.Mark != "" {
		s.marks[l.Mark] = l.Until
	}
}

// Mark implements Store.
func (s *File) Mark(_ context.Context, id string, until time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u, ok := s.marks[id]; ok && (u.IsZero() || time.Now().Before(u)) {
		return false, nil
	}
	if err := s.commit(&fileLine{Mark: id, Until: until}); err != nil {
		return false, err
	}
	return true, nil
}

// commit writes l to the file, then applies it.
func (s *File) commit(l *fileLine) error {
	if err := s.write(l); err != nil {
		return err
	}
	s.applyLine(l)
	s.maybeCompact()
	return nil
}

// write appends one line and syncs it.
func (s *File) write(l *fileLine) error {
	if s.path == "" {
		return nil
	}
	if s.f == nil {
		if err := s.reopen(); err != nil {
			return err
		}
	}
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	n, err := s.f.Write(append(b, '\n'))
	s.size += int64(n)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	return nil
}

// reopen opens the file for appending, in place of the handle before.
func (s *File) reopen() error {
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("keys: reopen %s: %w", s.path, err)
	}
	if s.f != nil {
		s.f.Close()
	}
	s.f = f
	return nil
}

// maybeCompact compacts the file once it reached compactAt. A failure is
// logged, and tried again once the file doubled.
func (s *File) maybeCompact() {
	if s.path == "" || s.size < s.compactAt {
		return
	}
	before := s.size
	if err := s.compact(); err != nil {
		s.compactAt = 2 * s.size
		s.log.Warn("keys: compacting the file failed; tried again once it doubles", zap.String("path", s.path),
			zap.Error(err))
		return
	}
	s.log.Info("keys: file compacted", zap.String("path", s.path), zap.Int64("bytes_before", before),
		zap.Int64("bytes", s.size))
}

// compact rewrites the file as the store's state.
func (s *File) compact() error {
	now := time.Now()
	for id, until := range s.marks {
		if !until.IsZero() && !now.Before(until) {
			delete(s.marks, id)
		}
	}
	if runtime.GOOS == "windows" && s.f != nil { // it renames no file that is open
		s.f.Close()
		s.f = nil
	}
	n, err := atomicfile.Replace(s.path, 0o600, s.writeState)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	s.size, s.compactAt = n, max(s.compactMin, 2*n)
	if s.f != nil {
		s.f.Close() // the file before: appending to it now would be lost
		s.f = nil
	}
	return s.reopen()
}

// writeState writes the store's state as lines that load back into it: the
// audit trail in its order, the teams, the keys, the last uses, the marks,
// and the version.
func (s *File) writeState(w *bufio.Writer) error {
	line := func(l *fileLine) error {
		b, err := json.Marshal(l)
		if err != nil {
			return err
		}
		w.Write(b)
		return w.WriteByte('\n')
	}
	for i := range s.audit {
		if err := line(&fileLine{Event: &s.audit[i]}); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.data.Teams)) {
		if err := line(&fileLine{Team: s.data.Teams[name]}); err != nil {
			return err
		}
	}
	for _, id := range slices.Sorted(maps.Keys(s.data.Keys)) {
		if err := line(&fileLine{Key: s.data.Keys[id]}); err != nil {
			return err
		}
	}
	if len(s.data.Used) > 0 {
		if err := line(&fileLine{Used: s.data.Used}); err != nil {
			return err
		}
	}
	for _, id := range slices.Sorted(maps.Keys(s.marks)) {
		if err := line(&fileLine{Mark: id, Until: s.marks[id]}); err != nil {
			return err
		}
	}
	return line(&fileLine{Version: s.data.Version})
}

// Load implements Store. Teams and keys are never changed in place, so the
// copy shares them.
func (s *File) Load(context.Context) (*Data, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &Data{Version: s.data.Version, Teams: maps.Clone(s.data.Teams), Keys: maps.Clone(s.data.Keys),
		Used: maps.Clone(s.data.Used)}, nil
}

// Version implements Store.
func (s *File) Version(context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.data.Version, nil
}

// Apply implements Store.
func (s *File) Apply(_ context.Context, c Change) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.Create && ((c.Team != nil && s.data.Teams[c.Team.Name] != nil) || (c.Key != nil && s.data.Keys[c.Key.ID] != nil)) {
		return ErrExists
	}
	ev := c.Event
	return s.commit(&fileLine{Version: s.data.Version + 1, Team: c.Team, DeleteTeam: c.DeleteTeam, Key: c.Key, Event: &ev})
}

// Touch implements Store.
func (s *File) Touch(_ context.Context, used map[string]int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commit(&fileLine{Used: used})
}

// Audit implements Store.
func (s *File) Audit(_ context.Context, limit int) ([]Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(max(limit, 0), len(s.audit))
	out := make([]Event, 0, n)
	for i := len(s.audit) - 1; i >= len(s.audit)-n; i-- {
		out = append(out, s.audit[i])
	}
	return out, nil
}

// Watch implements Store: a single replica has nobody to hear from.
func (s *File) Watch(ctx context.Context, _ func()) { <-ctx.Done() }

// Close implements Store.
func (s *File) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
