package provider

import (
	"io"
)

// Input images passed through. A request that carries an image as base64
// (an edit, a multi-turn conversation) holds it in the client's body for as
// long as the request is in flight: seconds, while the image is generated.
// Copying it into the upstream request body as well would hold it twice.
// Instead, the upstream body is written as the gateway's own bytes with
// references to the spans of the client's body that carry the images
// (they are sent as they are: standard base64 checked when the request was
// parsed), written straight from there to the connection.

// refMin is the smallest base64 span referenced rather than copied: below
// it a copy costs less than a write call of its own.
const refMin = 32 << 10

// bodyRef is a span of the client's body inserted at offset at of the
// gateway's bytes.
type bodyRef struct {
	at  int
	ext []byte
}

// splitBody is an upstream request body: buf with refs inserted, in order
// of their offsets. It is a fasthttp body stream that writes itself
// (BodyWriterTo), so no copy of the referenced spans is made on the way.
type splitBody struct {
	buf  []byte
	refs []bodyRef
	// Read's position: the next reference, the offset in buf, the
	// offset in the reference being read.
	ri, off, roff int
}

// Len is the body's length in bytes.
func (b *splitBody) Len() int {
	n := len(b.buf)
	for _, r := range b.refs {
		n += len(r.ext)
	}
	return n
}

// WriteTo writes the whole body to w.
func (b *splitBody) WriteTo(w io.Writer) (int64, error) {
	var n int64
	put := func(p []byte) error {
		m, err := w.Write(p)
		n += int64(m)
		if err == nil && m != len(p) {
			err = io.ErrShortWrite
		}
		return err
	}
	at := 0
	for _, r := range b.refs {
		if err := put(b.buf[at:r.at]); err != nil {
			return n, err
		}
		if err := put(r.ext); err != nil {
			return n, err
		}
		at = r.at
	}
	return n, put(b.buf[at:])
}

// SupportsBodyWriteTo tells fasthttp that WriteTo may be used.
func (b *splitBody) SupportsBodyWriteTo() bool { return true }

// Read implements io.Reader for callers that do not use WriteTo.
func (b *splitBody) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		at := len(b.buf)
		if b.ri < len(b.refs) {
			at = b.refs[b.ri].at
		}
		if b.off < at {
			m := copy(p[n:], b.buf[b.off:at])
			n += m
			b.off += m
			continue
		}
		if b.ri == len(b.refs) {
			break
		}
		ext := b.refs[b.ri].ext
		m := copy(p[n:], ext[b.roff:])
		n += m
		if b.roff += m; b.roff == len(ext) {
			b.ri, b.roff = b.ri+1, 0
		}
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// flatten is the body as one slice (tests).
func (b *splitBody) flatten() []byte {
	out := make([]byte, 0, b.Len())
	at := 0
	for _, r := range b.refs {
		out = append(append(out, b.buf[at:r.at]...), r.ext...)
		at = r.at
	}
	return append(out, b.buf[at:]...)
}
