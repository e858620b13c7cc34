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
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	Status    string `json:"status"`
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
	// Writing more than max bytes fails with ErrFileTooLarge. A file with
	// f.ID already stored is replaced at Commit.
	Create(ctx context.Context, f File, max int64) (FileWriter, error)
	// Stat returns a file's metadata, or ErrNotFound.
	Stat(ctx context.Context, id string) (*File, error)
	// Open returns a file's content and metadata, or ErrNotFound.
	Open(ctx context.Context, id string) (io.ReadCloser, *File, error)
	// ReadAt returns n bytes of a file's content from off.
	ReadAt(ctx context.Context, id string, off int64, n int) ([]byte, error)
	// Delete removes a file; ErrNotFound when there is none.
	Delete(ctx context.Context, id string) error
	// List returns the files of owner (with purpose, when not ""), newest
	// first (oldest first with asc), after the id after (exclusive, "" from
	// the start), at most limit, and whether more follow.
	List(ctx context.Context, owner, purpose, after string, limit int, asc bool) ([]*File, bool, error)
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
// embedded gateway; replicas sharing Redis use RedisFiles.
type FS struct {
	dir string
	seq atomic.Uint64
}

// NewFS returns a store in dir, creating it.
func NewFS(dir string) (*FS, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("batch files: %w", err)
	}
	return &FS{dir: dir}, nil
}

// Dir is the store's directory.
func (s *FS) Dir() string { return s.dir }

func (s *FS) path(id string) string { return filepath.Join(s.dir, id) }

func (s *FS) tmp() string {
	return filepath.Join(s.dir, fmt.Sprintf(".tmp-%d-%d-%d", os.Getpid(), time.Now().UnixNano(), s.seq.Add(1)))
}

// Create implements FileStore.
func (s *FS) Create(_ context.Context, f File, max int64) (FileWriter, error) {
	name := s.tmp()
	fh, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("batch files: %w", err)
	}
	return &fsWriter{s: s, f: f, fh: fh, tmp: name, max: max, buf: bufio.NewWriterSize(fh, 256<<10)}, nil
}

type fsWriter struct {
	s    *FS
	f    File
	fh   *os.File
	tmp  string
	max  int64
	n    int64
	buf  *bufio.Writer
	done bool
}

func (w *fsWriter) Write(p []byte) (int, error) {
	if w.n+int64(len(p)) > w.max {
		return 0, ErrFileTooLarge
	}
	n, err := w.buf.Write(p)
	w.n += int64(n)
	return n, err
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
	if err == nil {
		err = os.Rename(w.tmp, w.s.path(w.f.ID))
	}
	if err != nil {
		os.Remove(w.tmp)
		return nil, fmt.Errorf("batch files: write %s: %w", w.f.ID, err)
	}
	f := w.f
	f.Object, f.Status, f.Bytes = "file", "processed", w.n
	meta, _ := json.Marshal(fileMeta{File: f, Owner: f.Owner})
	if err := writeAtomic(w.s.path(f.ID)+".json", meta, w.s.tmp()); err != nil {
		os.Remove(w.s.path(f.ID))
		return nil, fmt.Errorf("batch files: write %s: %w", f.ID, err)
	}
	return &f, nil
}

func (w *fsWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.fh.Close()
	os.Remove(w.tmp)
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

// Delete implements FileStore: the metadata goes first, so a file is never
// listed without its content.
func (s *FS) Delete(_ context.Context, id string) error {
	err := os.Remove(s.path(id) + ".json")
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("batch files: %w", err)
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
