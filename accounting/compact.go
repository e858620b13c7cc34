package accounting

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"go.uber.org/zap"

	"nanogate/internal/atomicfile"
)

// Compaction keeps the embedded store's file, and the time to open it,
// bounded: once the records appended since the last compaction outgrow the
// snapshot at the head of the file (and compactMinBytes), the file is
// rewritten as a new snapshot of the store's state followed by the records
// applied while the snapshot was being written.
//
// The snapshot (snapshot.go) holds the totals of every team and period and
// the ids still remembered (inside Options.IDWindow), so that a record
// replayed after a compaction still counts once. The new file is written
// beside the old one (path + compactSuffix), fsynced, then renamed over it: a
// crash at any point leaves either the old file or the whole new one, never
// both halves.
const (
	compactMinBytes = 16 << 20
	compactSuffix   = ".compact"
)

// compactStep names the points between the steps of a compaction, where
// tests stop it as a killed process would.
type compactStep int

const (
	stepNone   compactStep = iota
	stepTail               // the snapshot and the records of the meantime are fsynced beside the file
	stepRename             // they have replaced the file, not reopened yet
)

// errStopped is a compaction stopped by a test at Memory.stopAt.
var errStopped = errors.New("accounting: compaction stopped")

// freeze copies the totals and notes the file's size, under the lock; the
// ids are a view of the remembered ones, which Apply only appends to.
func (m *Memory) freeze() (*frozen, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.f == nil {
		return nil, errors.New("accounting: store closed")
	}
	n := len(m.order)
	fz := &frozen{offset: m.size, nids: len(m.ids), order: m.order[m.head:n:n]}
	for team, buckets := range m.teams {
		for p, b := range buckets {
			fz.buckets = append(fz.buckets, snapOf(team, p, b))
		}
	}
	return fz, nil
}

// compactDueLocked starts a compaction in the background when the file has
// grown past compactAt, one at a time.
func (m *Memory) compactDueLocked() {
	if m.compacting || m.closed || m.f == nil || m.size < m.compactAt {
		return
	}
	m.compacting = true
	m.compactions.Add(1)
	go func() {
		defer m.compactions.Done()
		err := m.compact()
		m.mu.Lock()
		defer m.mu.Unlock()
		m.compacting = false
		if err != nil && !errors.Is(err, errStopped) && !m.closed {
			// Try again once as much again has been written, not at
			// every record.
			m.compactAt = m.size + m.compactMin
			m.log.Error("accounting: compaction of the usage file failed; it goes on growing",
				zap.String("path", m.path), zap.Error(err))
		}
	}()
}

// nextCompaction is the size of the file, with a snapshot of head bytes at
// its start, past which it is compacted again.
func (m *Memory) nextCompaction(head int64) int64 { return head + max(head, m.compactMin) }

// compact rewrites the file as a snapshot of the state followed by the
// records applied since it was taken. Apply waits only while the state is
// copied and while those records are copied after the snapshot.
func (m *Memory) compact() error {
	start := time.Now()
	p, err := m.writeCompaction()
	if err != nil {
		return err
	}
	before, err := m.install(p)
	if err != nil {
		return err
	}
	m.log.Info("accounting: usage file compacted", zap.String("path", m.path), zap.Int64("bytes_before", before),
		zap.Int64("snapshot_bytes", p.head), zap.Int("ids", p.ids), zap.Duration("took", time.Since(start)))
	return nil
}

// compaction is a snapshot written beside the file, followed by the
// records the file got since the state was taken, up to offset copied.
type compaction struct {
	f      *os.File
	tmp    string
	copied int64 // the offset in the file up to which its records follow the snapshot
	head   int64 // bytes of the snapshot
	size   int64 // bytes of the compaction
	ids    int
}

// writeCompaction writes a snapshot of the state beside the file, then the
// records applied meanwhile, and fsyncs it, all outside the lock.
func (m *Memory) writeCompaction() (*compaction, error) {
	fz, err := m.freeze()
	if err != nil {
		return nil, err
	}
	p := &compaction{tmp: m.path + compactSuffix, copied: fz.offset, ids: fz.nids}
	if p.f, err = os.OpenFile(p.tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640); err != nil {
		return nil, fmt.Errorf("accounting: %w", err)
	}
	p.head, err = writeSnapshot(p.f, fz)
	p.size = p.head
	if err == nil {
		err = m.catchUp(p)
	}
	if err == nil {
		err = p.f.Sync()
	}
	if err != nil {
		p.abandon()
		return nil, fmt.Errorf("accounting: write %s: %w", p.tmp, err)
	}
	return p, nil
}

// catchUp copies to the snapshot the records the file got since p.copied,
// up to its size now. Only Close closes the file, after every compaction
// has ended, and only install replaces it, so it is read outside the lock.
func (m *Memory) catchUp(p *compaction) error {
	m.mu.Lock()
	f, upto := m.f, m.size
	m.mu.Unlock()
	if f == nil {
		return errors.New("accounting: store closed")
	}
	return p.copy(f, upto)
}

func (p *compaction) copy(from *os.File, upto int64) error {
	n, err := io.Copy(p.f, io.NewSectionReader(from, p.copied, upto-p.copied))
	p.copied += n
	p.size += n
	return err
}

func (p *compaction) abandon() {
	p.f.Close()
	os.Remove(p.tmp)
}

// install renames the compaction over the file once the last records
// applied meanwhile follow it; it returns the size of the file it replaced.
// No fsync of a record appended after the rename may precede the fsync that
// makes the rename durable: the record would be lost with the rename.
func (m *Memory) install(p *compaction) (int64, error) {
	m.syncMu.Lock()
	defer m.syncMu.Unlock()
	before, old, err := m.swap(p)
	if old != nil {
		// Freeing the replaced file's blocks takes milliseconds: not
		// under the lock.
		defer old.Close()
	}
	if err != nil {
		return 0, err
	}
	if err := atomicfile.SyncDir(filepath.Dir(m.path)); err != nil {
		m.log.Warn("accounting: fsync of the data directory after a compaction failed",
			zap.String("path", m.path), zap.Error(err))
	}
	return before, nil
}

// swap copies the last records, fsyncs the compaction and renames it over
// the file, under the lock: Apply waits only for this. It returns the size
// of the file replaced and, when it is still open, the file, for the caller
// to close.
func (m *Memory) swap(p *compaction) (before int64, old *os.File, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.f == nil {
		p.abandon()
		return 0, nil, errors.New("accounting: store closed during a compaction")
	}
	err = p.copy(m.f, m.size)
	if err == nil {
		err = p.f.Sync()
	}
	if err != nil {
		p.abandon()
		return 0, nil, fmt.Errorf("accounting: write %s: %w", p.tmp, err)
	}
	p.f.Close()
	if m.stopAt == stepTail {
		return 0, nil, errStopped
	}
	before, old, m.f = m.size, m.f, nil
	if runtime.GOOS == "windows" { // it renames no file that is open
		old.Close()
		old = nil
	}
	if err := os.Rename(p.tmp, m.path); err != nil {
		os.Remove(p.tmp)
		if old != nil {
			m.f = old
			return 0, nil, fmt.Errorf("accounting: %w", err)
		}
		return 0, nil, errors.Join(fmt.Errorf("accounting: %w", err), m.reopenLocked())
	}
	m.size, m.unsynced = p.size, 0
	m.compactAt = m.nextCompaction(p.head)
	if m.stopAt == stepRename {
		return 0, old, errStopped
	}
	if err := m.reopenLocked(); err != nil {
		m.log.Error("accounting: the compacted usage file does not reopen; Apply tries again",
			zap.String("path", m.path), zap.Error(err))
	}
	return before, old, nil
}

// reopenLocked opens the file for appending; Apply tries again while it
// fails.
func (m *Memory) reopenLocked() error {
	f, err := os.OpenFile(m.path, os.O_RDWR|os.O_APPEND, 0o640)
	if err != nil {
		m.fileErr = err
		return fmt.Errorf("accounting: reopen %s: %w", m.path, err)
	}
	m.f = f
	return nil
}
