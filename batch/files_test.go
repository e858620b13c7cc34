package batch

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"nanogate/internal/redistest"
)

func TestFSFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	runFilesSuite(t, s)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestRedisFiles(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	runFilesSuite(t, NewRedisFiles(c, "t:"))
	if keys, _ := c.Keys(context.Background(), "*tmp*").Result(); len(keys) != 0 {
		t.Errorf("left behind: %v", keys)
	}
}

// runFilesSuite is the behaviour every FileStore shares.
func runFilesSuite(t *testing.T, s FileStore) {
	ctx := context.Background()
	put := func(owner, purpose, content string, at time.Time) *File {
		t.Helper()
		w, err := s.Create(ctx, File{ID: NewFileID(at), Owner: owner, Filename: "f.jsonl", CreatedAt: at.Unix()}, 100, Quota{})
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, content)
		w.Meta().Purpose = purpose
		f, err := w.Commit()
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	now := time.Now()
	a := put("t:a", PurposeBatch, "hello world", now)
	b := put("t:a", PurposeBatchOutput, "out", now.Add(time.Millisecond))
	put("t:b", PurposeBatch, "other", now.Add(2*time.Millisecond))
	c := put("t:a", PurposeBatch, "third", now.Add(3*time.Millisecond))

	if a.Bytes != 11 || a.Object != "file" || a.Status != "processed" || a.Purpose != PurposeBatch {
		t.Fatalf("%+v", a)
	}
	got, err := s.Stat(ctx, a.ID)
	if err != nil || *got != *a {
		t.Fatalf("Stat: %+v %v", got, err)
	}
	part, err := s.ReadAt(ctx, a.ID, 6, 5)
	if err != nil || string(part) != "world" {
		t.Fatalf("ReadAt: %q %v", part, err)
	}
	rc, _, err := s.Open(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := io.ReadAll(rc)
	rc.Close()
	if string(all) != "hello world" {
		t.Fatalf("Open: %q", all)
	}
	// Newest first, the owner's only, in pages.
	list, more, _ := s.List(ctx, "t:a", "", "", 2, false)
	if len(list) != 2 || !more || list[0].ID != c.ID || list[1].ID != b.ID {
		t.Fatalf("page 1: %v %v", list, more)
	}
	list, more, _ = s.List(ctx, "t:a", "", list[1].ID, 2, false)
	if len(list) != 1 || more || list[0].ID != a.ID {
		t.Fatalf("page 2: %v %v", list, more)
	}
	list, _, _ = s.List(ctx, "t:a", PurposeBatch, "", 10, true)
	if len(list) != 2 || list[0].ID != a.ID || list[1].ID != c.ID {
		t.Fatalf("purpose batch, oldest first: %v", list)
	}
	// Too large: nothing is left behind.
	w, _ := s.Create(ctx, File{ID: NewFileID(now), Owner: "t:a"}, 4, Quota{})
	if _, err := io.WriteString(w, "12345"); !errors.Is(err, ErrFileTooLarge) {
		t.Fatalf("over the cap: %v", err)
	}
	w.Abort()
	if err := s.Delete(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, a.ID); err != ErrNotFound {
		t.Fatalf("after Delete: %v", err)
	}
	if err := s.Delete(ctx, a.ID); err != ErrNotFound {
		t.Fatalf("Delete twice: %v", err)
	}
	if _, err := s.ReadAt(ctx, a.ID, 0, 1); err == nil {
		t.Fatal("content readable after Delete")
	}
	// A big file goes in several chunks and reads back whole.
	big := strings.Repeat("0123456789abcdef", 200_000)
	w, err = s.Create(ctx, File{ID: NewFileID(now), Owner: "t:a", Purpose: PurposeBatch}, 10<<20, Quota{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(big); i += 100_000 {
		io.WriteString(w, big[i:min(i+100_000, len(big))])
	}
	f, err := w.Commit()
	if err != nil || f.Bytes != int64(len(big)) {
		t.Fatalf("big: %+v %v", f, err)
	}
	rc, _, _ = s.Open(ctx, f.ID)
	back, _ := io.ReadAll(rc)
	rc.Close()
	if string(back) != big {
		t.Fatalf("big file read back: %d bytes", len(back))
	}
	if part, _ := s.ReadAt(ctx, f.ID, 3_000_001, 4); string(part) != "123"+"4" {
		t.Fatalf("ReadAt past a chunk: %q", part)
	}
	// An empty file.
	w, _ = s.Create(ctx, File{ID: NewFileID(now), Owner: "t:e", Purpose: PurposeBatch}, 10, Quota{})
	if f, err := w.Commit(); err != nil || f.Bytes != 0 {
		t.Fatalf("empty: %+v %v", f, err)
	}
}

func TestIDs(t *testing.T) {
	now := time.Now()
	b, f := NewBatchID(now), NewFileID(now)
	if !ValidBatchID(b) || !ValidFileID(f) || !ValidFileID(outputFileID(b)) || !ValidFileID(errorFileID(b)) {
		t.Fatalf("%s %s %s", b, f, outputFileID(b))
	}
	for _, bad := range []string{"", "file-../../x", "file-" + strings.Repeat("z", 26), b} {
		if ValidFileID(bad) {
			t.Errorf("ValidFileID(%q)", bad)
		}
	}
	// Later ids sort after earlier ones.
	if later := NewBatchID(now.Add(time.Millisecond)); later <= b {
		t.Errorf("%s sorts before %s", later, b)
	}
}
