package openai

import "io"

// segBody is a rendered answer made of segs: it writes itself piece by
// piece to fasthttp (BodyWriterTo), so image bytes go from the upstream
// buffer to the socket without a copy, and is an io.Reader for any other
// copier.
type segBody struct {
	segs
	release func()
	i       int // next piece, for Read
	off     int // offset in that piece
}

// Len is the body's length in bytes.
func (b *segBody) Len() int { return b.n }

// WriteTo writes the body piece by piece.
func (b *segBody) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for ; b.i < len(b.parts); b.i++ {
		p := b.bytes(b.parts[b.i])[b.off:]
		n, err := w.Write(p)
		total += int64(n)
		if err != nil {
			b.off += n
			return total, err
		}
		b.off = 0
	}
	return total, nil
}

// SupportsBodyWriteTo tells fasthttp to use WriteTo.
func (b *segBody) SupportsBodyWriteTo() bool { return true }

// Read implements io.Reader for copiers without WriteTo.
func (b *segBody) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && b.i < len(b.parts) {
		src := b.bytes(b.parts[b.i])[b.off:]
		c := copy(p[n:], src)
		n += c
		b.off += c
		if b.off == len(b.bytes(b.parts[b.i])) {
			b.i, b.off = b.i+1, 0
		}
	}
	if n == 0 && b.i >= len(b.parts) {
		return 0, io.EOF
	}
	return n, nil
}

// Close releases the upstream buffers behind the images.
func (b *segBody) Close() error {
	if b.release != nil {
		b.release()
		b.release = nil
	}
	return nil
}
