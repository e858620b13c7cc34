package images

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// testStore is the suite every Store passes; newStore returns a fresh,
// empty store.
func testStore(t *testing.T, newStore func(t *testing.T) Store) {
	ctx := context.Background()

	t.Run("RoundTrip", func(t *testing.T) {
		s := newStore(t)
		for _, size := range []int{1, 3, 4096, imageSize} {
			img := testImage(size, uint64(size))
			id := newID("png")
			if err := s.Put(ctx, id, "image/png", bytes.NewReader(img), int64(size)); err != nil {
				t.Fatalf("put %d bytes: %v", size, err)
			}
			rc, mime, n, err := s.Get(ctx, id)
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			if mime != "image/png" || n != int64(size) || !bytes.Equal(got, img) {
				t.Errorf("got %d bytes (announced %d) of %s, want the %d put as image/png", len(got), n, mime, size)
			}
		}
	})

	t.Run("TypeFromID", func(t *testing.T) {
		s := newStore(t)
		id := newID("webp")
		if err := s.Put(ctx, id, "image/webp", bytes.NewReader([]byte("RIFF....WEBP")), 12); err != nil {
			t.Fatal(err)
		}
		rc, mime, _, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
		if mime != "image/webp" {
			t.Errorf("mime %q, want image/webp", mime)
		}
	})

	t.Run("UnknownIDNotFound", func(t *testing.T) {
		s := newStore(t)
		if _, _, _, err := s.Get(ctx, newID("png")); !errors.Is(err, ErrNotFound) {
			t.Errorf("get of an id never put: %v, want ErrNotFound", err)
		}
	})

	t.Run("MalformedIDsRefused", func(t *testing.T) {
		s := newStore(t)
		for _, id := range badIDs() {
			if err := s.Put(ctx, id, "image/png", bytes.NewReader([]byte("x")), 1); !errors.Is(err, ErrBadID) {
				t.Errorf("put %q: %v, want ErrBadID", id, err)
			}
			if _, _, _, err := s.Get(ctx, id); !errors.Is(err, ErrBadID) {
				t.Errorf("get %q: %v, want ErrBadID", id, err)
			}
			if _, err := s.Link(id, "image/png"); !errors.Is(err, ErrBadID) {
				t.Errorf("link %q: %v, want ErrBadID", id, err)
			}
		}
	})

	// A Put whose reader does not deliver exactly size bytes, or fails, or
	// whose context ends, fails and leaves no image behind.
	t.Run("FailedPutLeavesNothing", func(t *testing.T) {
		s := newStore(t)
		img := testImage(300_000, 7)
		canceled, cancel := context.WithCancel(ctx)
		cancel()
		cases := []struct {
			name string
			ctx  context.Context
			r    io.Reader
			size int64
		}{
			{"short", ctx, bytes.NewReader(img[:200_000]), int64(len(img))},
			{"reader fails", ctx, io.MultiReader(bytes.NewReader(img[:100_000]), iotest.ErrReader(errors.New("boom"))), int64(len(img))},
			{"canceled", canceled, bytes.NewReader(img), int64(len(img))},
		}
		for _, c := range cases {
			id := newID("png")
			if err := s.Put(c.ctx, id, "image/png", c.r, c.size); err == nil {
				t.Errorf("%s: put succeeded", c.name)
			}
			if _, _, _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: after the failed put, get: %v, want ErrNotFound", c.name, err)
			}
		}
	})

	// An image appears whole or not at all: while a Put is under way its id
	// names nothing.
	t.Run("NotVisibleUntilComplete", func(t *testing.T) {
		s := newStore(t)
		img := testImage(imageSize, 8)
		id := newID("png")
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() { done <- s.Put(ctx, id, "image/png", pr, int64(len(img))) }()
		if _, err := pw.Write(img[:len(img)/2]); err != nil { // taken by Put: the upload is under way
			t.Fatal(err)
		}
		if rc, _, n, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("half-way through the put, get: %d bytes, %v; want ErrNotFound", n, err)
		}
		pw.Write(img[len(img)/2:])
		pw.Close()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		rc, _, n, err := s.Get(ctx, id)
		if err != nil || n != int64(len(img)) {
			t.Fatalf("after the put: %d bytes, %v", n, err)
		}
		rc.Close()
	})

	t.Run("LinkParsesBack", func(t *testing.T) {
		s := newStore(t)
		id := newID("png")
		link, err := s.Link(id, "image/png")
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.ParseLink(ctx, link)
		if err != nil || got != id {
			t.Errorf("ParseLink(Link(%s)) = %q, %v", id, got, err)
		}
	})
}

// badIDs are names that must never reach a store: traversal, separators,
// NUL, wrong case, wrong length, unknown or missing extension, temp files.
func badIDs() []string {
	hex := "0123456789abcdef0123456789abcdef"
	return []string{
		"", ".", "..", "../x", "..%2fx", "%2e%2e", "/etc/passwd", "/" + hex + ".png", hex + "/.png",
		"../" + hex + ".png", hex + ".png/..", hex + ".png\x00", hex + "\x00.png", "\x00",
		hex[:31] + ".png", hex + "0.png", hex + hex + ".png", "0123456789ABCDEF0123456789ABCDEF.png",
		hex + ".PNG", hex + ".svg", hex + ".html", hex + ".png.txt", hex + "png", hex + ".", hex,
		".tmp-0123456789abcdef", hex + ".jpg ", " " + hex + ".jpg", hex + ".pn", "g" + hex[1:] + ".png",
	}
}

func TestFSStore(t *testing.T) {
	testStore(t, func(t *testing.T) Store { return newFSEnv(t, nil).fs })
}
