package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

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
//
// An owner's quota keys share the owner's hash tag:
//
//	<prefix>files:quota:{<owner>}       hash: bytes, files (committed and reserved)
//	<prefix>files:quota:{<owner>}:res   sorted set: upload -> deadline (ms)
//	<prefix>files:quota:{<owner>}:resb  hash: upload -> bytes reserved
//
// Every chunk is reserved by a script (check and add in one step) before it
// is appended, so uploads on many replicas never overshoot. An upload whose
// replica died holds its room until its deadline (quotaHold after its last
// chunk); the next reservation of the owner gives it back. <prefix>files:expiry
// is a sorted set of ids by expiry (Unix seconds): a sweep takes what is due
// and removes each file with a script that deletes its keys only if they
// are there, so of two replicas sweeping the same file one gives its room
// back.
type RedisFiles struct {
	c      redis.UniversalClient
	prefix string
	// now is time.Now but in tests, which move expiry and upload deadlines
	// against a real redis-server: no synctest bubble can hold its I/O.
	now func() time.Time
}

// NewRedisFiles returns a file store on c, its keys starting with prefix.
func NewRedisFiles(c redis.UniversalClient, prefix string) *RedisFiles {
	return &RedisFiles{c: c, prefix: prefix, now: time.Now}
}

func (s *RedisFiles) meta(id string) string      { return s.prefix + "file:{" + id + "}" }
func (s *RedisFiles) data(id string) string      { return s.meta(id) + ":data" }
func (s *RedisFiles) owner(o string) string      { return s.prefix + "files:owner:" + o }
func (s *RedisFiles) tmp(id, n string) string    { return s.meta(id) + ":tmp:" + n }
func (s *RedisFiles) expiry() string             { return s.prefix + "files:expiry" }
func redisFilesErr(what string, err error) error { return fmt.Errorf("batch files: %s: %w", what, err) }

// quotaKeys are the keys of owner's quota: counters, reservation deadlines,
// reserved bytes.
func (s *RedisFiles) quotaKeys(owner string) []string {
	q := s.prefix + "files:quota:{" + owner + "}"
	return []string{q, q + ":res", q + ":resb"}
}

// quotaHold is how long an upload's reservation outlives its last chunk: an
// upload whose replica died gives its room back after it.
const quotaHold = 15 * time.Minute

// reserveScript gives back the owner's reservations past their deadline,
// then reserves ARGV[3] files and ARGV[2] bytes for upload ARGV[1] if they
// fit in ARGV[5] files and ARGV[4] bytes (or ARGV[6] is "1": counted
// anyway) and moves the upload's deadline to ARGV[8]. ARGV[7] is now (ms).
// Returns {status, bytes used, files used}: 0 reserved, 1 no room for a
// file, 2 no room for the bytes, 3 the upload's reservation is gone.
// Counters go down by "0 - n", never "-n": Lua writes -0 as "-0", which
// HINCRBY refuses.
var reserveScript = redis.NewScript(`
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[7])
for _, m in ipairs(stale) do
  local b = tonumber(redis.call('HGET', KEYS[3], m) or '0')
  redis.call('HINCRBY', KEYS[1], 'bytes', 0 - b)
  redis.call('HINCRBY', KEYS[1], 'files', -1)
  redis.call('HDEL', KEYS[3], m)
  redis.call('ZREM', KEYS[2], m)
end
local nb, nf = tonumber(ARGV[2]), tonumber(ARGV[3])
if nf == 0 and redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then return {3, 0, 0} end
local used = redis.call('HMGET', KEYS[1], 'bytes', 'files')
local ub, uf = tonumber(used[1] or '0'), tonumber(used[2] or '0')
if ARGV[6] ~= '1' then
  if nf > 0 and tonumber(ARGV[5]) > 0 and uf + nf > tonumber(ARGV[5]) then return {1, ub, uf} end
  if tonumber(ARGV[4]) > 0 and ub + nb > tonumber(ARGV[4]) then return {2, ub, uf} end
end
redis.call('HINCRBY', KEYS[1], 'bytes', nb)
redis.call('HINCRBY', KEYS[1], 'files', nf)
redis.call('HINCRBY', KEYS[3], ARGV[1], nb)
redis.call('ZADD', KEYS[2], ARGV[8], ARGV[1])
return {0, ub + nb, uf + nf}
`)

// settleScript turns upload ARGV[1]'s reservation into its committed
// file's use; when the reservation was given back meanwhile (a stall past
// its deadline), the file's ARGV[2] bytes are counted again.
var settleScript = redis.NewScript(`
if redis.call('HDEL', KEYS[3], ARGV[1]) == 0 then
  redis.call('HINCRBY', KEYS[1], 'bytes', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'files', 1)
end
redis.call('ZREM', KEYS[2], ARGV[1])
return 0
`)

// releaseScript gives back upload ARGV[1]'s reservation, if it still holds
// one.
var releaseScript = redis.NewScript(`
local b = redis.call('HGET', KEYS[3], ARGV[1])
if b then
  redis.call('HINCRBY', KEYS[1], 'bytes', 0 - tonumber(b))
  redis.call('HINCRBY', KEYS[1], 'files', -1)
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 0
`)

// giveBackScript gives back a removed file's ARGV[1] bytes and one file,
// never below zero (files stored before quotas were counted).
var giveBackScript = redis.NewScript(`
local b = redis.call('HINCRBY', KEYS[1], 'bytes', 0 - tonumber(ARGV[1]))
local f = redis.call('HINCRBY', KEYS[1], 'files', -1)
if b < 0 then redis.call('HSET', KEYS[1], 'bytes', 0) end
if f < 0 then redis.call('HSET', KEYS[1], 'files', 0) end
return 0
`)

// removeScript deletes a file's keys (KEYS: meta, data) and returns its
// metadata: {2, meta} when this call removed it, {0} when it was not
// there, {1} when ARGV[1] (a time, Unix seconds) is set and the file does
// not expire by then (replaced meanwhile by one that expires later), {3}
// when it is set and the file never expires.
var removeScript = redis.NewScript(`
local m = redis.call('HGET', KEYS[1], 'meta')
if not m then return {0} end
if ARGV[1] ~= '' then
  local e = cjson.decode(m)['expires_at']
  if type(e) ~= 'number' or e == 0 then return {3} end
  if e > tonumber(ARGV[1]) then return {1} end
end
redis.call('DEL', KEYS[1], KEYS[2])
return {2, m}
`)

// commitScript puts a file's content (KEYS[1], renamed to KEYS[2]) and
// metadata ARGV[1] (in KEYS[3]) in place, and returns the metadata of the
// file it replaced, if any.
var commitScript = redis.NewScript(`
local old = redis.call('HGET', KEYS[3], 'meta')
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[3], 'meta', ARGV[1])
return old
`)

// reserve runs reserveScript for an upload.
func (s *RedisFiles) reserve(ctx context.Context, owner, upload string, bytes, files int64, q Quota) error {
	force := "0"
	if q.Force {
		force = "1"
	}
	now := s.now()
	v, err := reserveScript.Run(ctx, s.c, s.quotaKeys(owner), upload, bytes, files, q.MaxBytes, q.MaxFiles, force,
		now.UnixMilli(), now.Add(quotaHold).UnixMilli()).Int64Slice()
	if err != nil {
		return redisFilesErr("quota of "+owner, err)
	}
	if len(v) != 3 {
		return redisFilesErr("quota of "+owner, fmt.Errorf("unexpected answer %v", v))
	}
	switch v[0] {
	case 1:
		return filesQuotaError(v[2], q.MaxFiles)
	case 2:
		return bytesQuotaError(v[1], q.MaxBytes)
	case 3:
		return redisFilesErr("quota of "+owner, errors.New("the upload's reservation expired"))
	}
	return nil
}

// remove deletes file id (only when it expired by notAfter, if not zero),
// gives its room back and takes it out of the indexes. removed is false
// when another call removed it first or it does not expire by notAfter.
func (s *RedisFiles) remove(ctx context.Context, id string, notAfter time.Time) (removed bool, err error) {
	at := ""
	if !notAfter.IsZero() {
		at = strconv.FormatInt(notAfter.Unix(), 10)
	}
	v, err := removeScript.Run(ctx, s.c, []string{s.meta(id), s.data(id)}, at).Slice()
	if err != nil {
		return false, redisFilesErr("delete "+id, err)
	}
	status, _ := v[0].(int64)
	switch status {
	case 0, 3:
		return false, s.c.ZRem(ctx, s.expiry(), id).Err()
	case 1:
		return false, nil
	}
	raw, _ := v[1].(string)
	var m fileMeta
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return true, redisFilesErr("metadata of "+id, err)
	}
	if err := giveBackScript.Run(ctx, s.c, s.quotaKeys(m.Owner)[:1], m.Bytes).Err(); err != nil {
		return true, redisFilesErr("quota of "+m.Owner, err)
	}
	_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, s.owner(m.Owner), id)
		p.ZRem(ctx, s.expiry(), id)
		return nil
	})
	if err != nil {
		return true, redisFilesErr("delete "+id, err)
	}
	return true, nil
}

// Usage implements FileStore.
func (s *RedisFiles) Usage(ctx context.Context, owner string) (Usage, error) {
	v, err := s.c.HMGet(ctx, s.quotaKeys(owner)[0], "bytes", "files").Result()
	if err != nil {
		return Usage{}, redisFilesErr("quota of "+owner, err)
	}
	n := func(x any) int64 {
		str, _ := x.(string)
		i, _ := strconv.ParseInt(str, 10, 64)
		return i
	}
	return Usage{Bytes: n(v[0]), Files: n(v[1])}, nil
}

// Sweep implements FileStore.
func (s *RedisFiles) Sweep(ctx context.Context) (int, error) {
	now := s.now()
	n := 0
	// Bounded: files that a replacement keeps from expiring stay listed
	// until their score is moved.
	for range 100 {
		ids, err := s.c.ZRangeByScore(ctx, s.expiry(), &redis.ZRangeBy{Min: "-inf",
			Max: strconv.FormatInt(now.Unix(), 10), Count: 200}).Result()
		if err != nil {
			return n, redisFilesErr("sweep", err)
		}
		progress := false
		for _, id := range ids {
			removed, err := s.remove(ctx, id, now)
			if err != nil {
				return n, err
			}
			if removed {
				n++
				progress = true
			}
		}
		if len(ids) < 200 || !progress {
			return n, nil
		}
	}
	return n, nil
}

// chunk is the size of one APPEND and one GETRANGE.
const chunk = 1 << 20

// Create implements FileStore.
func (s *RedisFiles) Create(ctx context.Context, f File, max int64, q Quota) (FileWriter, error) {
	n := nonce()
	w := &redisWriter{s: s, ctx: ctx, f: f, owner: f.Owner, q: q, upload: f.ID + ":" + n, max: max, tmp: s.tmp(f.ID, n)}
	if err := s.reserve(ctx, w.owner, w.upload, 0, 1, q); err != nil {
		return nil, err
	}
	// The key exists from the start, so that an empty file renames too.
	// It expires with the reservation: an upload whose replica died leaves
	// nothing behind.
	if err := s.c.Set(ctx, w.tmp, "", quotaHold).Err(); err != nil {
		w.release()
		return nil, redisFilesErr("create "+f.ID, err)
	}
	return w, nil
}

type redisWriter struct {
	s      *RedisFiles
	ctx    context.Context
	f      File
	owner  string // as reserved at Create, whatever Meta does
	q      Quota
	upload string // the reservation's name
	max    int64
	n      int64
	tmp    string
	buf    []byte
	done   bool
}

// release gives back the writer's reservation.
func (w *redisWriter) release() {
	releaseScript.Run(context.Background(), w.s.c, w.s.quotaKeys(w.owner), w.upload)
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
	if err := w.s.reserve(w.ctx, w.owner, w.upload, int64(len(w.buf)), 0, w.q); err != nil {
		return err
	}
	_, err := w.s.c.Pipelined(w.ctx, func(p redis.Pipeliner) error {
		if w.n == int64(len(w.buf)) {
			// The first chunk is SET: APPEND to a short string allocates
			// twice what it holds, and most files are one chunk.
			p.Set(w.ctx, w.tmp, w.buf, quotaHold)
		} else {
			p.Append(w.ctx, w.tmp, string(w.buf))
			p.PExpire(w.ctx, w.tmp, quotaHold)
		}
		return nil
	})
	if err != nil {
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
		w.release()
		return nil, err
	}
	f := w.f
	f.Object, f.Status, f.Bytes, f.Owner = "file", "processed", w.n, w.owner
	meta, _ := json.Marshal(fileMeta{File: f, Owner: f.Owner})
	old, err := commitScript.Run(w.ctx, w.s.c, []string{w.tmp, w.s.data(f.ID), w.s.meta(f.ID)}, meta).Text()
	if err != nil && !errors.Is(err, redis.Nil) {
		w.s.c.Del(context.Background(), w.tmp)
		w.release()
		return nil, redisFilesErr("commit "+f.ID, err)
	}
	if err := settleScript.Run(w.ctx, w.s.c, w.s.quotaKeys(w.owner), w.upload, w.n).Err(); err != nil {
		return nil, redisFilesErr("quota of "+f.ID, err)
	}
	if old != "" {
		var m fileMeta
		if json.Unmarshal([]byte(old), &m) == nil {
			if err := giveBackScript.Run(w.ctx, w.s.c, w.s.quotaKeys(m.Owner)[:1], m.Bytes).Err(); err != nil {
				return nil, redisFilesErr("quota of "+f.ID, err)
			}
		}
	}
	_, err = w.s.c.Pipelined(w.ctx, func(p redis.Pipeliner) error {
		p.ZAdd(w.ctx, w.s.owner(f.Owner), redis.Z{Member: f.ID})
		if f.ExpiresAt != 0 {
			p.ZAdd(w.ctx, w.s.expiry(), redis.Z{Member: f.ID, Score: float64(f.ExpiresAt)})
		} else {
			p.ZRem(w.ctx, w.s.expiry(), f.ID)
		}
		return nil
	})
	if err != nil {
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
	w.release()
}

// Stat implements FileStore.
func (s *RedisFiles) Stat(ctx context.Context, id string) (*File, error) {
	f, err := s.stat(ctx, id)
	if err == nil && f.ExpiresAt.expired(s.now()) {
		return nil, ErrNotFound
	}
	return f, err
}

// stat reads a file's metadata, expired or not.
func (s *RedisFiles) stat(ctx context.Context, id string) (*File, error) {
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
	removed, err := s.remove(ctx, id, time.Time{})
	if err != nil {
		return err
	}
	if !removed {
		return ErrNotFound
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
