package images

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Putting an image as it arrives (Begin): a forwarded answer hands an
// image's base64 over window by window, and its decoded size is known only
// at its end, while Store.Put needs it first. An ImageWriter decodes each
// window into a spool file on disk: for the filesystem store the spool is
// the store's own temporary file, synced and renamed into place at Commit
// (no second copy); for another store (S3) a temporary file in the spool
// directory, Put with its size at Commit and removed. The process holds a
// window of the image, never the image.
//
// A failed store must not cost the client its image: the spool keeps the
// decoded image until the writer is closed, and after a failed Commit Inline
// reads it back as base64 (encoded again, window by window), so the caller
// answers inline as Offload's callers do. When the spool itself fails (a
// full disk, base64 it cannot decode), what it took is read back and the
// rest of the image kept in memory: the one case where an image is held
// whole, bounded by MaxImageBytes.

// DefaultMaxImageBytes bounds an image put as it arrives (decoded): 48 MiB
// is what the largest upstream answer the providers read (64 MiB of base64)
// can carry, so the bound refuses nothing a buffered answer could offload;
// it keeps an upstream that never ends its image from filling the disk.
const DefaultMaxImageBytes = 48 << 20

// stageBytes is the base64 staged before it is decoded (a multiple of 4),
// and what Inline hands out per window.
const stageBytes = 32 << 10

// stage is an ImageWriter's buffers: base64 in, decoded bytes out.
type stage struct {
	in  [stageBytes]byte
	out [stageBytes / 4 * 3]byte
}

var stages = sync.Pool{New: func() any { return new(stage) }}

// spooler is how a store takes an image decoded into a spool file.
type spooler interface {
	// spool creates an empty file, open for reading and writing.
	spool() (*os.File, error)
	// keep stores the spool's size bytes under id. The spool stays open
	// and readable whatever happens.
	keep(ctx context.Context, f *os.File, id, mime string, size int64) error
	// discard closes the spool and removes it, unless keep moved it into
	// the store (kept).
	discard(f *os.File, kept bool)
}

// putSpool spools into a directory of its own and stores with Put: any
// store (S3) whose Put must know the size first.
type putSpool struct {
	store Store
	dir   string
}

func (p putSpool) spool() (*os.File, error) { return os.CreateTemp(p.dir, tmpPrefix+"*") }

func (p putSpool) keep(ctx context.Context, f *os.File, id, mime string, size int64) error {
	return p.store.Put(ctx, id, mime, io.NewSectionReader(f, 0, size), size)
}

func (p putSpool) discard(f *os.File, _ bool) {
	f.Close()
	os.Remove(f.Name())
}

// removeStaleSpools deletes the spool files in dir that a process which
// stopped mid-image left behind (the filesystem store's sweeper does the
// same in its own directory).
func removeStaleSpools(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	cutoff := time.Now().Add(-staleTemp)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), tmpPrefix) || !e.Type().IsRegular() {
			continue
		}
		if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// ImageWriter puts one image into the store as its base64 arrives (see
// Offloader.Begin). It is used by one goroutine; Close it whatever happens.
type ImageWriter struct {
	o   *Offloader
	ext string
	f   *os.File // the spool; nil once discarded
	n   int64    // decoded bytes in the spool
	st  *stage
	in  []byte // the base64 staged, over st.in
	// padded: a quad with padding was decoded, so the image has ended.
	padded bool
	// mem is the image's base64 once the spool failed (held is why).
	mem  []byte
	held error
	// lost: the image can be neither stored nor answered inline (too
	// large, a spool that fails and cannot be read back).
	lost error
	// rd is where Inline is: spool bytes, or mem bytes, handed out.
	rd     int64
	done   bool // Commit ran
	kept   bool // the image is in the store
	closed bool
}

// Begin starts putting an image of type mime whose base64 is to come in
// windows (Write), for a caller that cannot hold the image (a forwarded
// answer). It fails with ErrUnsupportedType for a type that is not
// offloaded, or when no spool file can be made: the caller then sends the
// image inline, nothing having been consumed.
func (o *Offloader) Begin(mime string) (*ImageWriter, error) {
	ext := extOf(mime)
	if ext == "" {
		o.failed.Add(1)
		return nil, fmt.Errorf("%w: %.64q", ErrUnsupportedType, mime)
	}
	f, err := o.spooler.spool()
	if err != nil {
		o.failed.Add(1)
		return nil, fmt.Errorf("images: spooling an image: %w", err)
	}
	st := stages.Get().(*stage)
	return &ImageWriter{o: o, ext: ext, f: f, st: st, in: st.in[:0]}, nil
}

// Write takes the next window of the image's standard base64 (padded or
// not, split anywhere). It fails only when the image cannot be answered at
// all: past MaxImageBytes (ErrTooLarge), or when a failing spool cannot
// even be read back; a spool that fails otherwise keeps the image in
// memory, and Commit then reports why.
func (w *ImageWriter) Write(b64 []byte) error {
	if w.done || w.closed {
		return errors.New("images: write to an image writer that is done")
	}
	if w.lost != nil {
		return w.lost
	}
	if w.f == nil {
		return w.hold(b64)
	}
	for len(b64) > 0 {
		k := copy(w.in[len(w.in):cap(w.in)], b64)
		w.in, b64 = w.in[:len(w.in)+k], b64[k:]
		if len(w.in) < cap(w.in) {
			return nil
		}
		if err := w.decode(false); err != nil {
			if err := w.spill(err); err != nil {
				return err
			}
			return w.hold(b64)
		}
	}
	return nil
}

// decode decodes the whole quads staged (all of it, final) into the spool
// and keeps what is left of the stage.
func (w *ImageWriter) decode(final bool) error {
	in := w.in
	q := len(in) - len(in)%4
	if w.padded && len(in) > 0 {
		return fmt.Errorf("%w: data after the padding", ErrBadBase64)
	}
	m, err := base64.StdEncoding.Decode(w.st.out[:], in[:q])
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadBase64, err)
	}
	w.padded = q > 0 && in[q-1] == '='
	tail := in[q:]
	if final && len(tail) > 0 {
		if w.padded || len(tail) == 1 {
			return fmt.Errorf("%w: impossible length", ErrBadBase64)
		}
		// Unpadded: 2 or 3 characters carry 1 or 2 bytes.
		t, err := base64.RawStdEncoding.Decode(w.st.out[m:], tail)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadBase64, err)
		}
		m, tail = m+t, nil
	}
	if w.n+int64(m) > w.o.maxImage {
		return fmt.Errorf("%w: over %d bytes", ErrTooLarge, w.o.maxImage)
	}
	if _, err := w.f.Write(w.st.out[:m]); err != nil {
		return fmt.Errorf("images: spooling an image: %w", err)
	}
	w.n += int64(m)
	w.in = w.in[:copy(w.in[:cap(w.in)], tail)]
	return nil
}

// spill moves the image to memory after the spool failed with why: what
// the spool took, encoded again, then the stage (not yet in the spool).
// Every decoded step but the last is whole quads, so the two join.
func (w *ImageWriter) spill(why error) (err error) {
	defer func() { w.lost = err }()
	if errors.Is(why, ErrTooLarge) {
		return why
	}
	mem := make([]byte, 0, base64.StdEncoding.EncodedLen(int(w.n))+2*stageBytes)
	for off := int64(0); off < w.n; {
		k, err := w.f.ReadAt(w.st.out[:min(int64(len(w.st.out)), w.n-off)], off)
		if err != nil && !(err == io.EOF && off+int64(k) == w.n) {
			return fmt.Errorf("images: reading back a failed spool: %w (after %w)", err, why)
		}
		mem = base64.StdEncoding.AppendEncode(mem, w.st.out[:k])
		off += int64(k)
	}
	w.mem, w.held = append(mem, w.in...), why
	w.o.spooler.discard(w.f, false)
	w.f, w.n, w.in = nil, 0, w.in[:0]
	return nil
}

// hold keeps more of a spilled image's base64, within the bound.
func (w *ImageWriter) hold(b64 []byte) error {
	if int64(len(w.mem))+int64(len(b64)) > int64(base64.StdEncoding.EncodedLen(int(w.o.maxImage))) {
		w.lost = fmt.Errorf("%w: over %d bytes", ErrTooLarge, w.o.maxImage)
		return w.lost
	}
	w.mem = append(w.mem, b64...)
	return nil
}

// Commit ends the image and stores it: the link of the stored image, or an
// error (nothing stored), after which Inline reads the image's base64
// back so that the caller can send it inline. The put is bounded by the
// Offloader's PutTimeout.
func (w *ImageWriter) Commit(ctx context.Context) (link string, err error) {
	if w.done || w.closed {
		return "", errors.New("images: commit of an image writer that is done")
	}
	w.done = true
	defer func() {
		if err != nil {
			w.o.failed.Add(1)
		}
	}()
	if w.lost != nil {
		return "", w.lost
	}
	if w.f != nil {
		if err := w.decode(true); err != nil {
			if err := w.spill(err); err != nil {
				return "", err
			}
		}
	}
	if w.f == nil {
		return "", fmt.Errorf("images: the image is answered inline: %w", w.held)
	}
	if w.n == 0 {
		return "", fmt.Errorf("%w: empty", ErrBadBase64)
	}
	id, mime := newID(w.ext), mimeOfExt(w.ext)
	ctx, cancel := context.WithTimeout(ctx, w.o.putTimeout)
	defer cancel()
	if err := w.o.spooler.keep(ctx, w.f, id, mime, w.n); err != nil {
		return "", err
	}
	w.kept = true
	return w.o.linked(id, mime, w.n)
}

// Inline returns the next window of the image's standard base64 after a
// failed Commit, io.EOF after the last. A window is valid until the next
// call.
func (w *ImageWriter) Inline() ([]byte, error) {
	if !w.done || w.kept || w.closed {
		return nil, errors.New("images: inline read of an image that was not refused")
	}
	if w.lost != nil {
		return nil, w.lost
	}
	if w.f == nil {
		if w.rd >= int64(len(w.mem)) {
			return nil, io.EOF
		}
		b := w.mem[w.rd:min(w.rd+stageBytes, int64(len(w.mem)))]
		w.rd += int64(len(b))
		return b, nil
	}
	if w.rd >= w.n {
		return nil, io.EOF
	}
	k, err := w.f.ReadAt(w.st.out[:min(int64(len(w.st.out)), w.n-w.rd)], w.rd)
	if k == 0 || (err != nil && err != io.EOF) {
		return nil, fmt.Errorf("images: reading back a spooled image: %w", err)
	}
	w.rd += int64(k)
	return base64.StdEncoding.AppendEncode(w.st.in[:0], w.st.out[:k]), nil
}

// Close removes the spool (unless it became the stored image) and gives
// the writer's buffers back. Safe to call twice; a writer closed before
// Commit leaves nothing behind.
func (w *ImageWriter) Close() {
	if w.closed {
		return
	}
	w.closed = true
	if w.f != nil {
		w.o.spooler.discard(w.f, w.kept)
		w.f = nil
	}
	stages.Put(w.st)
	w.st, w.in, w.mem = nil, nil, nil
}
