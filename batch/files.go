package batch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// File purposes.
const (
	PurposeBatch       = "batch"
	PurposeBatchOutput = "batch_output"
)

// MaxFileBytes caps a file (OpenAI's limit for batch input); uploads are also
// capped by server.max_body_bytes.
const MaxFileBytes = 200 << 20

// File is a stored file's metadata, in OpenAI's file object shape.
type File struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	// ExpiresAt is when the file is removed (0, null in JSON: never); an
	// expired file answers 404 before the sweeper removes it.
	ExpiresAt UnixTime `json:"expires_at"`
	Filename  string   `json:"filename"`
	Purpose   string   `json:"purpose"`
	Status    string   `json:"status"`
	// Owner is who may see the file (see OwnerOf); never shown to clients.
	Owner string `json:"-"`
}

// fileMeta is File as the FS keeps it, owner included.
type fileMeta struct {
	File
	Owner string `json:"owner"`
}

// FileStore keeps files. Ids are checked by the caller (ValidFileID).
type FileStore interface {
	// Create starts a file; its content is what is written before Commit.
	// Writing more than max bytes fails with ErrFileTooLarge. The file and
	// its bytes count against its owner's quota q from the start (a
	// *QuotaError when there is no room, from Create, Write or Commit); a
	// zero limit is none. A file with f.ID already stored is replaced at
	// Commit, and its room given back.
	Create(ctx context.Context, f File, max int64, q Quota) (FileWriter, error)
	// Stat returns a file's metadata, or ErrNotFound (also once it
	// expired).
	Stat(ctx context.Context, id string) (*File, error)
	// Open returns a file's content and metadata, or ErrNotFound.
	Open(ctx context.Context, id string) (io.ReadCloser, *File, error)
	// ReadAt returns n bytes of a file's content from off. It does not
	// look at the expiry: a batch that is running keeps reading its input.
	ReadAt(ctx context.Context, id string, off int64, n int) ([]byte, error)
	// Delete removes a file and gives its room back; ErrNotFound when there
	// is none.
	Delete(ctx context.Context, id string) error
	// Sweep removes the files whose expiry passed and gives their room
	// back, once however many replicas sweep at the same time; it returns
	// how many this call removed.
	Sweep(ctx context.Context) (int, error)
	// Usage is what owner's files take, uploads in progress included.
	Usage(ctx context.Context, owner string) (Usage, error)
	// List returns the files of owner (with purpose, when not ""), newest
	// first (oldest first with asc), after the id after (exclusive, "" from
	// the start), at most limit, and whether more follow.
	List(ctx context.Context, owner, purpose, after string, limit int, asc bool) ([]*File, bool, error)
}

// Usage is what an owner's files take.
type Usage struct {
	Bytes, Files int64
}

// FileWriter receives a new file's content.
type FileWriter interface {
	io.Writer
	// Meta is the metadata Commit saves; it may change until then (a
	// multipart upload may name the purpose after the file).
	Meta() *File
	// Commit makes the file visible and returns its metadata.
	Commit() (*File, error)
	// Abort drops the file; after Commit it does nothing.
	Abort()
}

// FS is a FileStore in a directory: the content of file id in <dir>/<id>, its
// metadata in <dir>/<id>.json, both written to a temporary name, synced and
// renamed into place, so a file is whole or absent. It is the store of the
// embedded gateway; replicas sharing Redis use RedisFiles. Quotas and
// expiry are kept in memory, rebuilt from the metadata at start.
type FS struct {
	dir string
	seq atomic.Uint64

	mu    sync.Mutex
	index map[string]fsEntry // committed files
	used  map[string]*Usage  // by owner: committed files and uploads in progress
}

type fsEntry struct {
	owner   string
	bytes   int64
	expires UnixTime
}

// NewFS returns a store in dir, creating it.
func NewFS(dir string) (*FS, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("batch files: %w", err)
	}
	s := &FS{dir: dir, index: map[string]fsEntry{}, used: map[string]*Usage{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("batch files: %w", err)
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !ValidFileID(id) {
			continue
		}
		f, err := s.stat(id)
		if err != nil {
			return nil, err
		}
		s.index[id] = fsEntry{owner: f.Owner, bytes: f.Bytes, expires: f.ExpiresAt}
		u := s.usage(f.Owner)
		u.Bytes += f.Bytes
		u.Files++
	}
	return s, nil
}

// usage returns owner's counters; s.mu is held (or s is not shared yet).
func (s *FS) usage(owner string) *Usage {
	u := s.used[owner]
	if u == nil {
		u = &Usage{}
		s.used[owner] = u
	}
	return u
}

// giveBack returns room to owner; s.mu is held.
func (s *FS) giveBack(owner string, bytes, files int64) {
	u := s.usage(owner)
	u.Bytes, u.Files = max(u.Bytes-bytes, 0), max(u.Files-files, 0)
	if u.Bytes == 0 && u.Files == 0 {
		delete(s.used, owner)
	}
}

// Usage implements FileStore.
func (s *FS) Usage(_ context.Context, owner string) (Usage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.used[owner]; u != nil {
		return *u, nil
	}
	return Usage{}, nil
}

// Dir is the store's directory.
func (s *FS) Dir() string { return s.dir }

func (s *FS) path(id string) string { return filepath.Join(s.dir, id) }

func (s *FS) tmp() string {
	return filepath.Join(s.dir, fmt.Sprintf(".tmp-%d-%d-%d", os.Getpid(), time.Now().UnixNano(), s.seq.Add(1)))
}

// Create implements FileStore.
func (s *FS) Create(_ context.Context, f File, max int64, q Quota) (FileWriter, error) {
	s.mu.Lock()
	u := s.usage(f.Owner)
	if !q.Force && q.MaxFiles > 0 && u.Files+1 > q.MaxFiles {
		err := filesQuotaError(u.Files, q.MaxFiles)
		s.mu.Unlock()
		return nil, err
	}
	u.Files++
	s.mu.Unlock()
	name := s.tmp()
	fh, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		s.mu.Lock()
		s.giveBack(f.Owner, 0, 1)
		s.mu.Unlock()
		return nil, fmt.Errorf("batch files: %w", err)
	}
	return &fsWriter{s: s, f: f, owner: f.Owner, q: q, fh: fh, tmp: name, max: max,
		buf: bufio.NewWriterSize(fh, 256<<10)}, nil
}

type fsWriter struct {
	s     *FS
	f     File
	owner string // as counted at Create, whatever Meta does
	q     Quota
	fh    *os.File
	tmp   string
	max   int64
	n     int64 // written, all of it reserved in the owner's usage
	buf   *bufio.Writer
	done  bool
}

func (w *fsWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("batch files: write after Commit or Abort")
	}
	if w.n+int64(len(p)) > w.max {
		return 0, ErrFileTooLarge
	}
	w.s.mu.Lock()
	u := w.s.usage(w.owner)
	if !w.q.Force && w.q.MaxBytes > 0 && u.Bytes+int64(len(p)) > w.q.MaxBytes {
		err := bytesQuotaError(u.Bytes, w.q.MaxBytes)
		w.s.mu.Unlock()
		return 0, err
	}
	u.Bytes += int64(len(p))
	w.s.mu.Unlock()
	n, err := w.buf.Write(p)
	w.n += int64(len(p))
	return n, err
}

// release gives back what the writer reserved.
func (w *fsWriter) release() {
	w.s.mu.Lock()
	w.s.giveBack(w.owner, w.n, 1)
	w.s.mu.Unlock()
}

func (w *fsWriter) Meta() *File { return &w.f }

func (w *fsWriter) Commit() (*File, error) {
	if w.done {
		return nil, errors.New("batch files: committed twice")
	}
	w.done = true
	err := w.buf.Flush()
	if err == nil {
		err = w.fh.Sync()
	}
	if cerr := w.fh.Close(); err == nil {
		err = cerr
	}
	// Replacing a file (a batch finalized again) swaps both of its parts:
	// the lock keeps a sweep or a delete from seeing half of it.
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if err == nil {
		err = os.Rename(w.tmp, w.s.path(w.f.ID))
	}
	if err != nil {
		os.Remove(w.tmp)
		w.s.giveBack(w.owner, w.n, 1)
		return nil, fmt.Errorf("batch files: write %s: %w", w.f.ID, err)
	}
	f := w.f
	f.Object, f.Status, f.Bytes, f.Owner = "file", "processed", w.n, w.owner
	meta, _ := json.Marshal(fileMeta{File: f, Owner: f.Owner})
	if err := writeAtomic(w.s.path(f.ID)+".json", meta, w.s.tmp()); err != nil {
		os.Remove(w.s.path(f.ID))
		w.s.giveBack(w.owner, w.n, 1)
		if old, ok := w.s.index[f.ID]; ok {
			// Its content was just overwritten and removed.
			os.Remove(w.s.path(f.ID) + ".json")
			delete(w.s.index, f.ID)
			w.s.giveBack(old.owner, old.bytes, 1)
		}
		return nil, fmt.Errorf("batch files: write %s: %w", f.ID, err)
	}
	if old, ok := w.s.index[f.ID]; ok {
		w.s.giveBack(old.owner, old.bytes, 1)
	}
	w.s.index[f.ID] = fsEntry{owner: w.owner, bytes: w.n, expires: f.ExpiresAt}
	return &f, nil
}

func (w *fsWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.fh.Close()
	os.Remove(w.tmp)
	w.release()
}

// writeAtomic writes data to path through tmp: the file is whole or absent.
func writeAtomic(path string, data []byte, tmp string) error {
	fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = fh.Write(data)
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// Stat implements FileStore.
func (s *FS) Stat(_ context.Context, id string) (*File, error) {
	f, err := s.stat(id)
	if err == nil && f.ExpiresAt.expired(time.Now()) {
		return nil, ErrNotFound
	}
	return f, err
}

// stat reads a file's metadata, expired or not.
func (s *FS) stat(id string) (*File, error) {
	data, err := os.ReadFile(s.path(id) + ".json")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("batch files: %w", err)
	}
	var m fileMeta
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("batch files: metadata of %s: %w", id, err)
	}
	f := m.File
	f.Owner = m.Owner
	return &f, nil
}

// Open implements FileStore.
func (s *FS) Open(ctx context.Context, id string) (io.ReadCloser, *File, error) {
	f, err := s.Stat(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	fh, err := os.Open(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, ErrNotFound
	}
	if err != nil {
		return nil, nil, fmt.Errorf("batch files: %w", err)
	}
	return fh, f, nil
}

// ReadAt implements FileStore.
func (s *FS) ReadAt(_ context.Context, id string, off int64, n int) ([]byte, error) {
	fh, err := os.Open(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("batch files: %w", err)
	}
	defer fh.Close()
	b := make([]byte, n)
	if _, err := fh.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("batch files: read %s: %w", id, err)
	}
	return b, nil
}

// Delete implements FileStore.
func (s *FS) Delete(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remove(id)
}

// Sweep implements FileStore.
func (s *FS) Sweep(context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	var errs []error
	n := 0
	for id, e := range s.index {
		if !e.expires.expired(now) {
			continue
		}
		if err := s.remove(id); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// remove deletes a file and gives its room back; s.mu is held. The metadata
// goes first, so a file is never listed without its content.
func (s *FS) remove(id string) error {
	err := os.Remove(s.path(id) + ".json")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("batch files: %w", err)
	}
	e, ok := s.index[id]
	if ok {
		delete(s.index, id)
		s.giveBack(e.owner, e.bytes, 1)
	}
	if err != nil {
		return ErrNotFound
	}
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("batch files: %w", err)
	}
	return nil
}

// List implements FileStore. It reads the directory: ids sort in creation
// order, so only the metadata of the page's candidates is read.
func (s *FS) List(ctx context.Context, owner, purpose, after string, limit int, asc bool) ([]*File, bool, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, false, fmt.Errorf("batch files: %w", err)
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok && ValidFileID(id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if !asc {
		slices.Reverse(ids)
	}
	var out []*File
	for _, id := range ids {
		if after != "" && ((asc && id <= after) || (!asc && id >= after)) {
			continue
		}
		f, err := s.Stat(ctx, id)
		if err != nil {
			continue // deleted meanwhile
		}
		if f.Owner != owner || (purpose != "" && f.Purpose != purpose) {
			continue
		}
		if len(out) == limit {
			return out, true, nil
		}
		out = append(out, f)
	}
	return out, false, nil
}
