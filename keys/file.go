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
	"sync"
	"time"

	"go.uber.org/zap"
)

// File is the embedded Store of a single replica: everything in memory,
// every change appended as one JSON line to a file (fsynced before Apply
// returns: changes are rare and each one is an admin's) and replayed on
// start.
type File struct {
	mu    sync.Mutex
	f     *os.File // nil without a file
	data  *Data
	audit []Event
	marks map[string]time.Time // Mark's ids, until when (zero: for ever)
}

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
	s := &File{data: newData(), marks: map[string]time.Time{}}
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
	s.f = f
	log.Info("keys: embedded store loaded", zap.String("path", path), zap.Int("teams", len(s.data.Teams)),
		zap.Int("keys", len(s.data.Keys)))
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
	l := &fileLine{Mark: id, Until: until}
	if err := s.write(l); err != nil {
		return false, err
	}
	s.applyLine(l)
	return true, nil
}

// write appends one line and syncs it.
func (s *File) write(l *fileLine) error {
	if s.f == nil {
		return nil
	}
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	if _, err := s.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	return nil
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
	l := &fileLine{Version: s.data.Version + 1, Team: c.Team, DeleteTeam: c.DeleteTeam, Key: c.Key, Event: &ev}
	if err := s.write(l); err != nil {
		return err
	}
	s.applyLine(l)
	return nil
}

// Touch implements Store.
func (s *File) Touch(_ context.Context, used map[string]int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := &fileLine{Used: used}
	if err := s.write(l); err != nil {
		return err
	}
	s.applyLine(l)
	return nil
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
