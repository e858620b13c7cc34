package images

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeWindows feeds b64 to w in windows of the given sizes, cycling.
func writeWindows(t *testing.T, w *ImageWriter, b64 []byte, sizes ...int) error {
	t.Helper()
	for i := 0; len(b64) > 0; i++ {
		k := min(sizes[i%len(sizes)], len(b64))
		if err := w.Write(b64[:k]); err != nil {
			return err
		}
		b64 = b64[k:]
	}
	return nil
}

// readInline is the base64 Inline hands out, whole.
func readInline(t *testing.T, w *ImageWriter) []byte {
	t.Helper()
	var out []byte
	for {
		b, err := w.Inline()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("Inline: %v", err)
		}
		out = append(out, b...)
	}
}

// files lists the names in dir (none when it is gone).
func files(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// storedImage reads the image behind a link of off's store.
func storedImage(t *testing.T, off *Offloader, link string) []byte {
	t.Helper()
	id, err := off.store.ParseLink(context.Background(), link)
	if err != nil {
		t.Fatalf("link %q: %v", link, err)
	}
	rc, _, _, err := off.store.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An image written in windows of any size, padded or not, is stored as its
// decoded bytes, and the store's directory holds that file alone.
func TestImageWriterStoresTheDecodedImage(t *testing.T) {
	e := newFSEnv(t, nil)
	for i, c := range []struct {
		size  int
		enc   *base64.Encoding
		split []int
	}{
		{imageSize, base64.StdEncoding, []int{stageBytes}},
		{imageSize + 1, base64.StdEncoding, []int{1, 7, 65535, 3}},
		{imageSize + 2, base64.RawStdEncoding, []int{256 << 10}},
		{1, base64.StdEncoding, []int{1}},
		{2, base64.RawStdEncoding, []int{1}},
		{stageBytes / 4 * 3, base64.StdEncoding, []int{stageBytes}},
	} {
		img := testImage(c.size, uint64(i))
		w, err := e.off.Begin("image/png")
		if err != nil {
			t.Fatal(err)
		}
		if err := writeWindows(t, w, []byte(c.enc.EncodeToString(img)), c.split...); err != nil {
			t.Fatalf("%d bytes: %v", c.size, err)
		}
		link, err := w.Commit(context.Background())
		w.Close()
		if err != nil {
			t.Fatalf("%d bytes: %v", c.size, err)
		}
		if got := storedImage(t, e.off, link); !bytes.Equal(got, img) {
			t.Fatalf("%d bytes: stored %d bytes that differ", c.size, len(got))
		}
		if names := files(t, e.fs.Dir()); len(names) != i+1 {
			t.Fatalf("directory holds %v after %d images", names, i+1)
		}
	}
	if s := e.off.Stats(); s.Offloaded != 6 || s.Failed != 0 {
		t.Errorf("stats %+v", s)
	}
}

// A store that fails at the commit (its directory wiped mid-image) stores
// nothing, and the image's base64 is read back from the spool, which the
// writer still holds open.
func TestImageWriterFailedCommitReadsBackInline(t *testing.T) {
	e := newFSEnv(t, nil)
	img := testImage(imageSize, 3)
	enc := b64(img)
	w, err := e.off.Begin("image/png")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(enc[:len(enc)/2]); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(e.fs.Dir()); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(enc[len(enc)/2:]); err != nil {
		t.Fatal(err)
	}
	if link, err := w.Commit(context.Background()); err == nil {
		t.Fatalf("Commit = %q with the directory gone", link)
	}
	if got := readInline(t, w); !bytes.Equal(got, enc) {
		t.Fatalf("inline read back %d bytes of base64 that differ from the %d sent", len(got), len(enc))
	}
	w.Close()
	w.Close()
	if names := files(t, e.parent); len(names) != 0 {
		t.Errorf("left behind: %v", names)
	}
	if s := e.off.Stats(); s.Failed != 1 || s.Offloaded != 0 {
		t.Errorf("stats %+v", s)
	}
}

// A spool that cannot be written mid-image (a full disk) keeps the image:
// what it took is read back, the rest held, and the image answered inline.
func TestImageWriterSpoolFailureKeepsTheImage(t *testing.T) {
	e := newFSEnv(t, nil)
	img := testImage(imageSize, 4)
	enc := []byte(base64.RawStdEncoding.EncodeToString(img))
	w, err := e.off.Begin("image/png")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeWindows(t, w, enc[:500_001], 1000); err != nil {
		t.Fatal(err)
	}
	// The spool becomes a file that refuses writes and can still be read.
	ro, err := os.Open(w.f.Name())
	if err != nil {
		t.Fatal(err)
	}
	w.f.Close()
	w.f = ro
	if err := writeWindows(t, w, enc[500_001:], 70_000); err != nil {
		t.Fatalf("the spool's failure lost the image: %v", err)
	}
	if w.f != nil || w.held == nil {
		t.Fatal("the image was not moved to memory")
	}
	if _, err := w.Commit(context.Background()); err == nil {
		t.Fatal("Commit succeeded with the spool failing")
	}
	got, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(string(readInline(t, w)), "="))
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("inline image differs: %v", err)
	}
	w.Close()
	if names := files(t, e.fs.Dir()); len(names) != 0 {
		t.Errorf("left behind: %v", names)
	}
}

// A writer closed before its commit (the upstream broke) leaves nothing,
// nor does one refused for malformed base64 or for its size.
func TestImageWriterAbortLeavesNothing(t *testing.T) {
	e := newFSEnv(t, nil)
	off := NewOffloader(e.fs, Options{MaxImageBytes: 100_000})
	enc := b64(testImage(imageSize, 5))

	w, err := off.Begin("image/png")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(enc[:90_000]); err != nil {
		t.Fatal(err)
	}
	w.Close()

	w, err = off.Begin("image/png")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeWindows(t, w, enc, 40_000); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("an image past MaxImageBytes: %v", err)
	}
	if _, err := w.Commit(context.Background()); err == nil {
		t.Fatal("Commit of a refused image succeeded")
	}
	if _, err := w.Inline(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Inline of an image too large to answer: %v", err)
	}
	w.Close()

	// Padding then more data: refused by the store, answered inline as sent.
	bad := append(b64(testImage(1000, 6)), "AAAA"...)
	w, err = off.Begin("image/png")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(bad); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(context.Background()); !errors.Is(err, ErrBadBase64) {
		t.Fatalf("Commit of malformed base64: %v", err)
	}
	if got := readInline(t, w); !bytes.Equal(got, bad) {
		t.Fatalf("inline %q, want the base64 as sent", got)
	}
	w.Close()

	if names := files(t, e.fs.Dir()); len(names) != 0 {
		t.Errorf("left behind: %v", names)
	}
	if _, err := off.Begin("image/svg+xml"); !errors.Is(err, ErrUnsupportedType) {
		t.Errorf("Begin of an svg: %v", err)
	}
}

// Through S3 the image is spooled in the spool directory and Put with its
// size; the object is the decoded image and the spool is gone. With the
// server gone the commit fails and the image is read back inline.
func TestImageWriterS3(t *testing.T) {
	v := startVersity(t)
	spool := t.TempDir()
	off := NewOffloader(v.store(t, time.Hour), Options{PutTimeout: 10 * time.Second, SpoolDir: spool})
	img := testImage(imageSize, 7)
	w, err := off.Begin("image/png")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeWindows(t, w, b64(img), 100_000); err != nil {
		t.Fatal(err)
	}
	if names := files(t, spool); len(names) != 1 {
		t.Fatalf("spool directory %v while the image arrives", names)
	}
	link, err := w.Commit(context.Background())
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if got := storedImage(t, off, link); !bytes.Equal(got, img) {
		t.Fatalf("object of %d bytes differs from the image", len(got))
	}
	if names := files(t, spool); len(names) != 0 {
		t.Fatalf("spool left behind: %v", names)
	}

	v.Kill()
	w, err = off.Begin("image/png")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeWindows(t, w, b64(img), 100_000); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(context.Background()); err == nil {
		t.Fatal("Commit succeeded with the server gone")
	}
	if got := readInline(t, w); !bytes.Equal(got, b64(img)) {
		t.Fatal("inline base64 differs from the image's")
	}
	w.Close()
	if names := files(t, spool); len(names) != 0 {
		t.Fatalf("spool left behind: %v", names)
	}
}

// Spool files a process left behind are removed when the S3 store starts,
// once old enough that no write can still own them.
func TestNewRemovesStaleSpools(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{tmpPrefix + "old", tmpPrefix + "young", "keep.txt"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * staleTemp)
	for _, name := range []string{tmpPrefix + "old", "keep.txt"} {
		if err := os.Chtimes(filepath.Join(dir, name), old, old); err != nil {
			t.Fatal(err)
		}
	}
	removeStaleSpools(dir)
	if names := files(t, dir); strings.Join(names, ",") != tmpPrefix+"young,keep.txt" {
		t.Errorf("left %v", names)
	}
}
