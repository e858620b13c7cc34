package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/redis/go-redis/v9"
)

// RedisFiles is the FileStore of replicas sharing Redis: every replica reads
// every file without a shared volume (each replica has its own data/).
// File id's keys share the id's hash tag:
//
//	<prefix>file:{<id>}        hash: meta (JSON)
//	<prefix>file:{<id>}:data   string: the content
//
// and <prefix>files:owner:<owner> is a sorted set of the owner's ids. The
// content is appended in chunks to a temporary key of the same tag and
// renamed into place at Commit, so a file is whole or absent; reads are
// GETRANGE, so a worker reads one line of an input file, not the file.
// Files take Redis memory: input files are at most server.max_body_bytes,
// and output files hold image links, not images, unless lines ask for
// base64.
type RedisFiles struct {
	c      redis.UniversalClient
	prefix string
}

// NewRedisFiles returns a file store on c, its keys starting with prefix.
func NewRedisFiles(c redis.UniversalClient, prefix string) *RedisFiles {
	return &RedisFiles{c: c, prefix: prefix}
}

func (s *RedisFiles) meta(id string) string      { return s.prefix + "file:{" + id + "}" }
func (s *RedisFiles) data(id string) string      { return s.meta(id) + ":data" }
func (s *RedisFiles) owner(o string) string      { return s.prefix + "files:owner:" + o }
func (s *RedisFiles) tmp(id, n string) string    { return s.meta(id) + ":tmp:" + n }
func redisFilesErr(what string, err error) error { return fmt.Errorf("batch files: %s: %w", what, err) }

// chunk is the size of one APPEND and one GETRANGE.
const chunk = 1 << 20

// Create implements FileStore.
func (s *RedisFiles) Create(ctx context.Context, f File, max int64) (FileWriter, error) {
	w := &redisWriter{s: s, ctx: ctx, f: f, max: max, tmp: s.tmp(f.ID, nonce())}
	// The key exists from the start, so that an empty file renames too.
	if err := s.c.Set(ctx, w.tmp, "", 0).Err(); err != nil {
		return nil, redisFilesErr("create "+f.ID, err)
	}
	return w, nil
}

type redisWriter struct {
	s    *RedisFiles
	ctx  context.Context
	f    File
	max  int64
	n    int64
	tmp  string
	buf  []byte
	done bool
}

func (w *redisWriter) Meta() *File { return &w.f }

func (w *redisWriter) Write(p []byte) (int, error) {
	if w.n+int64(len(p)) > w.max {
		return 0, ErrFileTooLarge
	}
	w.n += int64(len(p))
	w.buf = append(w.buf, p...)
	if len(w.buf) >= chunk {
		if err := w.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (w *redisWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if err := w.s.c.Append(w.ctx, w.tmp, string(w.buf)).Err(); err != nil {
		return redisFilesErr("write "+w.f.ID, err)
	}
	w.buf = w.buf[:0]
	return nil
}

func (w *redisWriter) Commit() (*File, error) {
	if w.done {
		return nil, errors.New("batch files: committed twice")
	}
	w.done = true
	if err := w.flush(); err != nil {
		w.s.c.Del(context.Background(), w.tmp)
		return nil, err
	}
	f := w.f
	f.Object, f.Status, f.Bytes = "file", "processed", w.n
	meta, _ := json.Marshal(fileMeta{File: f, Owner: f.Owner})
	_, err := w.s.c.TxPipelined(w.ctx, func(p redis.Pipeliner) error {
		p.Rename(w.ctx, w.tmp, w.s.data(f.ID))
		p.HSet(w.ctx, w.s.meta(f.ID), "meta", meta)
		return nil
	})
	if err != nil {
		w.s.c.Del(context.Background(), w.tmp)
		return nil, redisFilesErr("commit "+f.ID, err)
	}
	if err := w.s.c.ZAdd(w.ctx, w.s.owner(f.Owner), redis.Z{Member: f.ID}).Err(); err != nil {
		return nil, redisFilesErr("index "+f.ID, err)
	}
	return &f, nil
}

func (w *redisWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.s.c.Del(context.Background(), w.tmp)
}

// Stat implements FileStore.
func (s *RedisFiles) Stat(ctx context.Context, id string) (*File, error) {
	raw, err := s.c.HGet(ctx, s.meta(id), "meta").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, redisFilesErr("stat "+id, err)
	}
	var m fileMeta
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, redisFilesErr("metadata of "+id, err)
	}
	f := m.File
	f.Owner = m.Owner
	return &f, nil
}

// Open implements FileStore: the content is read a chunk at a time.
func (s *RedisFiles) Open(ctx context.Context, id string) (io.ReadCloser, *File, error) {
	f, err := s.Stat(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	// The reader outlives the request's store deadline (the body streams
	// to a slow client): each chunk gets its own.
	return &redisReader{s: s, id: id, size: f.Bytes}, f, nil
}

type redisReader struct {
	s    *RedisFiles
	id   string
	off  int64
	size int64
	buf  []byte
}

func (r *redisReader) Read(p []byte) (int, error) {
	if len(r.buf) == 0 {
		if r.off >= r.size {
			return 0, io.EOF
		}
		n := min(int64(chunk), r.size-r.off)
		b, err := r.s.ReadAt(context.Background(), r.id, r.off, int(n))
		if err != nil {
			return 0, err
		}
		r.off += int64(len(b))
		r.buf = b
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *redisReader) Close() error { return nil }

// ReadAt implements FileStore.
func (s *RedisFiles) ReadAt(ctx context.Context, id string, off int64, n int) ([]byte, error) {
	if n <= 0 {
		return nil, nil
	}
	b, err := s.c.GetRange(ctx, s.data(id), off, off+int64(n)-1).Bytes()
	if err != nil {
		return nil, redisFilesErr("read "+id, err)
	}
	if len(b) != n {
		// GETRANGE of a missing key is "": the file is gone.
		if len(b) == 0 {
			return nil, ErrNotFound
		}
		return nil, redisFilesErr("read "+id, io.ErrUnexpectedEOF)
	}
	return b, nil
}

// Delete implements FileStore.
func (s *RedisFiles) Delete(ctx context.Context, id string) error {
	f, err := s.Stat(ctx, id)
	if err != nil {
		return err
	}
	_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.meta(id), s.data(id))
		return nil
	})
	if err == nil {
		err = s.c.ZRem(ctx, s.owner(f.Owner), id).Err()
	}
	if err != nil {
		return redisFilesErr("delete "+id, err)
	}
	return nil
}

// List implements FileStore.
func (s *RedisFiles) List(ctx context.Context, owner, purpose, after string, limit int, asc bool) ([]*File, bool, error) {
	var out []*File
	for {
		by := &redis.ZRangeBy{Min: "-", Max: "+", Count: 200}
		var ids []string
		var err error
		if asc {
			if after != "" {
				by.Min = "(" + after
			}
			ids, err = s.c.ZRangeByLex(ctx, s.owner(owner), by).Result()
		} else {
			if after != "" {
				by.Max = "(" + after
			}
			ids, err = s.c.ZRevRangeByLex(ctx, s.owner(owner), by).Result()
		}
		if err != nil {
			return nil, false, redisFilesErr("list", err)
		}
		for _, id := range ids {
			f, err := s.Stat(ctx, id)
			if err != nil {
				continue // deleted meanwhile
			}
			if purpose != "" && f.Purpose != purpose {
				continue
			}
			if len(out) == limit {
				return out, true, nil
			}
			out = append(out, f)
		}
		if len(ids) < int(by.Count) {
			return out, false, nil
		}
		after = ids[len(ids)-1]
	}
}

var _ FileStore = (*RedisFiles)(nil)
var _ FileStore = (*FS)(nil)
