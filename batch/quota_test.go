package batch

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"

	"nanogate/internal/redistest"
)

// clock is a settable time for RedisFiles' expiry: tests move it instead of
// sleeping (against a real redis-server, no synctest bubble).
type clock struct{ t atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.t.Store(t.UnixNano())
	return c
}

func (c *clock) Now() time.Time      { return time.Unix(0, c.t.Load()) }
func (c *clock) Add(d time.Duration) { c.t.Add(int64(d)) }

// filesBackend is a FileStore under the quota suite, with a second handle
// on the same files (another replica for Redis, the same store for FS) and
// its clock: a bubble's for FS, a settable one for Redis.
type filesBackend struct {
	s, twin FileStore
	now     func() time.Time
	advance func(time.Duration)
	// reopen returns the store as a restarted process finds it (nil: the
	// state is not the process's).
	reopen func() FileStore
}

// unix is the backend's time d from now.
func (b *filesBackend) unix(d time.Duration) UnixTime { return UnixTime(b.now().Add(d).Unix()) }

// quotaSuite makes a fresh backend for each test of runQuotaSuite; bubble
// runs each test in a synctest bubble.
type quotaSuite struct {
	new    func(t *testing.T) *filesBackend
	bubble bool
}

// run runs f as the subtest name, with a fresh backend.
func (q quotaSuite) run(t *testing.T, name string, f func(t *testing.T, b *filesBackend)) {
	t.Run(name, func(t *testing.T) {
		if !q.bubble {
			f(t, q.new(t))
			return
		}
		synctest.Test(t, func(t *testing.T) { f(t, q.new(t)) })
	})
}

// fsFilesBackend is an FS store in a synctest bubble: sleeping moves its
// clock at once.
func fsFilesBackend(t *testing.T) *filesBackend {
	dir := t.TempDir()
	open := func() FileStore {
		s, err := NewFS(dir)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	return &filesBackend{s: s, twin: s, now: time.Now, advance: time.Sleep, reopen: open}
}

func redisFilesBackend(t *testing.T) *filesBackend {
	srv := redistest.Start(t)
	clk := newClock(time.Now())
	open := func() *RedisFiles {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { c.Close() })
		s := NewRedisFiles(c, "q:")
		s.now = clk.Now
		return s
	}
	return &filesBackend{s: open(), twin: open(), now: clk.Now, advance: clk.Add}
}

func TestFSQuota(t *testing.T)    { runQuotaSuite(t, quotaSuite{new: fsFilesBackend, bubble: true}) }
func TestRedisQuota(t *testing.T) { runQuotaSuite(t, quotaSuite{new: redisFilesBackend}) }

// upload stores content as a file of owner under q.
func upload(s FileStore, owner, content string, q Quota, expires UnixTime) (*File, error) {
	ctx := context.Background()
	w, err := s.Create(ctx, File{ID: NewFileID(time.Now()), Owner: owner, Purpose: PurposeBatch, ExpiresAt: expires}, 10<<20, q)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(w, content); err != nil {
		w.Abort()
		return nil, err
	}
	return w.Commit()
}

func runQuotaSuite(t *testing.T, qs quotaSuite) {
	ctx := context.Background()
	usage := func(t *testing.T, s FileStore, owner string, want Usage) {
		t.Helper()
		got, err := s.Usage(ctx, owner)
		if err != nil || got != want {
			t.Fatalf("usage of %s = %+v (%v), want %+v", owner, got, err, want)
		}
	}
	quotaErr := func(t *testing.T, err error, key string, used, limit int64) {
		t.Helper()
		var qe *QuotaError
		if !errors.As(err, &qe) || !errors.Is(err, ErrQuotaExceeded) {
			t.Fatalf("err = %v, want a quota error", err)
		}
		if qe.Key != key || qe.Used != used || qe.Limit != limit {
			t.Fatalf("quota error %+v, want %s %d of %d", qe, key, used, limit)
		}
		if !strings.Contains(qe.Error(), key) || !strings.Contains(qe.Error(), "in use") {
			t.Fatalf("message %q names neither the quota nor the use", qe.Error())
		}
	}

	qs.run(t, "BytesQuotaIsExactAtTheBoundary", func(t *testing.T, b *filesBackend) {
		q := Quota{MaxBytes: 100, MaxFiles: 10}
		if _, err := upload(b.s, "t:a", strings.Repeat("a", 60), q, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := upload(b.s, "t:a", strings.Repeat("b", 40), q, 0); err != nil {
			t.Fatalf("an upload that fills the quota exactly: %v", err)
		}
		usage(t, b.s, "t:a", Usage{Bytes: 100, Files: 2})
		_, err := upload(b.s, "t:a", "c", q, 0)
		quotaErr(t, err, "files.max_bytes_per_team", 100, 100)
		// The refused upload holds nothing, and other teams are not touched.
		usage(t, b.s, "t:a", Usage{Bytes: 100, Files: 2})
		if _, err := upload(b.s, "t:b", strings.Repeat("d", 100), q, 0); err != nil {
			t.Fatalf("another team: %v", err)
		}
		list, _, _ := b.s.List(ctx, "t:a", "", "", 10, false)
		if len(list) != 2 {
			t.Fatalf("%d files listed, want 2", len(list))
		}
	})

	qs.run(t, "FilesQuotaIsExactAtTheBoundary", func(t *testing.T, b *filesBackend) {
		q := Quota{MaxBytes: 1000, MaxFiles: 3}
		for range 3 {
			if _, err := upload(b.s, "t:a", "x", q, 0); err != nil {
				t.Fatal(err)
			}
		}
		_, err := upload(b.s, "t:a", "x", q, 0)
		quotaErr(t, err, "files.max_files_per_team", 3, 3)
		usage(t, b.s, "t:a", Usage{Bytes: 3, Files: 3})
	})

	qs.run(t, "ConcurrentUploadsCannotExceedTheQuota", func(t *testing.T, b *filesBackend) {
		q := Quota{MaxBytes: 50, MaxFiles: 1000}
		var ok, refused atomic.Int64
		var wg sync.WaitGroup
		for i := range 20 {
			s := b.s
			if i%2 == 1 {
				s = b.twin
			}
			wg.Go(func() {
				_, err := upload(s, "t:a", "0123456789", q, 0)
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, ErrQuotaExceeded):
					refused.Add(1)
				default:
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if ok.Load() != 5 || refused.Load() != 15 {
			t.Fatalf("%d uploads stored and %d refused, want 5 and 15", ok.Load(), refused.Load())
		}
		usage(t, b.s, "t:a", Usage{Bytes: 50, Files: 5})
	})

	qs.run(t, "DeleteAndAbortGiveRoomBack", func(t *testing.T, b *filesBackend) {
		q := Quota{MaxBytes: 20, MaxFiles: 2}
		f, err := upload(b.s, "t:a", strings.Repeat("a", 20), q, 0)
		if err != nil {
			t.Fatal(err)
		}
		w, err := b.s.Create(ctx, File{ID: NewFileID(time.Now()), Owner: "t:a"}, 100, q)
		if err != nil {
			t.Fatal(err)
		}
		w.Abort()
		usage(t, b.s, "t:a", Usage{Bytes: 20, Files: 1})
		if err := b.twin.Delete(ctx, f.ID); err != nil {
			t.Fatal(err)
		}
		if err := b.s.Delete(ctx, f.ID); err != ErrNotFound {
			t.Fatalf("second delete: %v", err)
		}
		usage(t, b.s, "t:a", Usage{})
		if _, err := upload(b.s, "t:a", strings.Repeat("b", 20), q, 0); err != nil {
			t.Fatalf("after the delete: %v", err)
		}
	})

	qs.run(t, "BatchOutputIsCountedNeverRefused", func(t *testing.T, b *filesBackend) {
		q := Quota{MaxBytes: 10, MaxFiles: 1}
		if _, err := upload(b.s, "t:a", "0123456789", q, 0); err != nil {
			t.Fatal(err)
		}
		force := q
		force.Force = true
		id := "file-" + suffix(NewBatchID(time.Now())) + "-out"
		put := func(content string) {
			w, err := b.s.Create(ctx, File{ID: id, Owner: "t:a", Purpose: PurposeBatchOutput}, 1<<20, force)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(w, content)
			if _, err := w.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		put(strings.Repeat("o", 30))
		usage(t, b.s, "t:a", Usage{Bytes: 40, Files: 2})
		// Finalized again: the file is replaced and counted once.
		put(strings.Repeat("p", 25))
		usage(t, b.s, "t:a", Usage{Bytes: 35, Files: 2})
		_, err := upload(b.s, "t:a", "x", q, 0)
		quotaErr(t, err, "files.max_files_per_team", 2, 1)
	})

	qs.run(t, "ExpiredFilesAreGoneAndSweptOnce", func(t *testing.T, b *filesBackend) {
		q := Quota{MaxBytes: 100, MaxFiles: 10}
		soon, err := upload(b.s, "t:a", "soon", q, b.unix(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		later, _ := upload(b.s, "t:a", "later!", q, b.unix(2*time.Hour))
		never, _ := upload(b.s, "t:a", "never", q, 0)
		if soon.ExpiresAt != b.unix(time.Hour) || never.ExpiresAt != 0 {
			t.Fatalf("expires_at %d, %d", soon.ExpiresAt, never.ExpiresAt)
		}
		if got, err := b.s.Stat(ctx, soon.ID); err != nil || got.ExpiresAt != soon.ExpiresAt {
			t.Fatalf("before its expiry: %+v %v", got, err)
		}
		if n, err := b.s.Sweep(ctx); err != nil || n != 0 {
			t.Fatalf("sweep before any expiry: %d %v", n, err)
		}
		b.advance(time.Hour)
		// Expired, not swept yet: answered as absent, still counted.
		if _, err := b.s.Stat(ctx, soon.ID); err != ErrNotFound {
			t.Fatalf("Stat of an expired file: %v", err)
		}
		if _, _, err := b.s.Open(ctx, soon.ID); err != ErrNotFound {
			t.Fatalf("Open of an expired file: %v", err)
		}
		if list, _, _ := b.s.List(ctx, "t:a", "", "", 10, false); len(list) != 2 {
			t.Fatalf("%d files listed, want the 2 that have not expired", len(list))
		}
		usage(t, b.s, "t:a", Usage{Bytes: 15, Files: 3})
		b.advance(time.Hour)
		// Two replicas (or two sweeps) at once: each file removed once.
		var removed atomic.Int64
		var wg sync.WaitGroup
		for i := range 4 {
			s := b.s
			if i%2 == 1 {
				s = b.twin
			}
			wg.Go(func() {
				n, err := s.Sweep(ctx)
				if err != nil {
					t.Error(err)
				}
				removed.Add(int64(n))
			})
		}
		wg.Wait()
		if removed.Load() != 2 {
			t.Fatalf("%d files removed, want 2", removed.Load())
		}
		usage(t, b.s, "t:a", Usage{Bytes: 5, Files: 1})
		if n, _ := b.s.Sweep(ctx); n != 0 {
			t.Fatalf("a third sweep removed %d", n)
		}
		usage(t, b.s, "t:a", Usage{Bytes: 5, Files: 1})
		if _, err := b.s.ReadAt(ctx, later.ID, 0, 1); err == nil {
			t.Fatal("the content of a swept file is still there")
		}
		if err := b.s.Delete(ctx, soon.ID); err != ErrNotFound {
			t.Fatalf("delete of a swept file: %v", err)
		}
		if _, err := b.s.Stat(ctx, never.ID); err != nil {
			t.Fatalf("a file without expiry: %v", err)
		}
	})

	qs.run(t, "RestartCountsWhatIsStored", func(t *testing.T, b *filesBackend) {
		if b.reopen == nil {
			t.Skip("the counters outlive the process")
		}
		q := Quota{MaxBytes: 100, MaxFiles: 10}
		upload(b.s, "t:a", "0123456789", q, b.unix(time.Hour))
		upload(b.s, "t:a", "01234", q, 0)
		s := b.reopen()
		usage(t, s, "t:a", Usage{Bytes: 15, Files: 2})
		b.advance(time.Hour)
		if n, _ := s.Sweep(ctx); n != 1 {
			t.Fatalf("swept %d after a restart, want 1", n)
		}
		usage(t, s, "t:a", Usage{Bytes: 5, Files: 1})
	})
}

// An upload whose replica died holds its room only until its reservation's
// deadline.
func TestRedisQuotaOfADeadUploadComesBack(t *testing.T) {
	b := redisFilesBackend(t)
	ctx := context.Background()
	q := Quota{MaxBytes: 3 << 20, MaxFiles: 2}
	w, err := b.s.Create(ctx, File{ID: NewFileID(time.Now()), Owner: "t:a"}, 10<<20, q)
	if err != nil {
		t.Fatal(err)
	}
	// Past one chunk: reserved and appended, then never committed.
	io.WriteString(w, strings.Repeat("x", 2<<20))
	if u, _ := b.s.Usage(ctx, "t:a"); u.Bytes < 1<<20 || u.Files != 1 {
		t.Fatalf("usage during the upload %+v", u)
	}
	if _, err := upload(b.twin, "t:a", strings.Repeat("y", 2<<20), q, 0); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("an upload next to the held room: %v", err)
	}
	b.advance(quotaHold + time.Second)
	if _, err := upload(b.twin, "t:a", strings.Repeat("y", 2<<20), q, 0); err != nil {
		t.Fatalf("after the dead upload's deadline: %v", err)
	}
	if u, _ := b.s.Usage(ctx, "t:a"); u != (Usage{Bytes: 2 << 20, Files: 1}) {
		t.Fatalf("usage %+v", u)
	}
}

func TestCheckExpiresAfter(t *testing.T) {
	for _, c := range []struct {
		anchor, seconds string
		want            int64
		param           string
	}{
		{"created_at", "3600", 3600, ""},
		{"created_at", "2592000", 2592000, ""},
		{"created_at", "3599", 0, "s"},
		{"created_at", "2592001", 0, "s"},
		{"created_at", "1e4", 0, "s"},
		{"created_at", "", 0, "s"},
		{"last_active_at", "3600", 0, "a"},
		{"", "3600", 0, "a"},
	} {
		n, err := CheckExpiresAfter(c.anchor, c.seconds, "a", "s")
		if c.param == "" {
			if err != nil || n != c.want {
				t.Errorf("%q %q: %d %v", c.anchor, c.seconds, n, err)
			}
			continue
		}
		if err == nil || err.Param != c.param || err.Status != 400 {
			t.Errorf("%q %q: %v, want 400 naming %s", c.anchor, c.seconds, err, c.param)
		}
	}
}

// A batch's output and error files belong to its team: counted, with the
// batch's output expiry, and written even when the team is over its quota.
func TestBatchOutputCountsAndExpires(t *testing.T) {
	h := newHarness(t, harnessOpts{topYAML: "files: { max_bytes_per_team: 10, max_files_per_team: 1, default_ttl: 2h }"})
	ctx := context.Background()
	b := h.create(t, EndpointChat, chatInput(2)) // the input is uploaded without a quota
	b = h.wait(t, b.ID, StatusCompleted, 5*time.Second)
	if b.OutputFileID == "" {
		t.Fatalf("no output file: %+v", b)
	}
	out, err := h.m.files.Stat(ctx, b.OutputFileID)
	if err != nil {
		t.Fatal(err)
	}
	if want := out.CreatedAt + 7200; int64(out.ExpiresAt) != want {
		t.Fatalf("output expires at %d, want created_at + files.default_ttl = %d", out.ExpiresAt, want)
	}
	u, _ := h.m.files.Usage(ctx, b.Owner)
	in, _ := h.m.files.Stat(ctx, b.InputFileID)
	if u.Files != 2 || u.Bytes != in.Bytes+out.Bytes {
		t.Fatalf("usage %+v, want the input's %d and the output's %d bytes", u, in.Bytes, out.Bytes)
	}

	// output_expires_after wins over the default.
	w, _ := h.m.files.Create(ctx, File{ID: NewFileID(time.Now()), Owner: b.Owner, Purpose: PurposeBatch}, 1<<20, Quota{})
	w.Write(chatInput(1))
	f, _ := w.Commit()
	b2, err := h.m.Create(ctx, h.rt, h.caller(), CreateParams{InputFileID: f.ID, Endpoint: EndpointChat,
		CompletionWindow: "24h", OutputExpiresAfter: 3600})
	if err != nil {
		t.Fatal(err)
	}
	b2 = h.wait(t, b2.ID, StatusCompleted, 5*time.Second)
	out2, err := h.m.files.Stat(ctx, b2.OutputFileID)
	if err != nil || int64(out2.ExpiresAt) != out2.CreatedAt+3600 {
		t.Fatalf("output with output_expires_after 3600: %+v %v", out2, err)
	}
}
