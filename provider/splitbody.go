package provider

import (
	"io"
	"sync"

	"github.com/valyala/fasthttp"
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

// appendRef appends v to dst, or, with refs and when v is large, a
// reference to it at dst's end.
func appendRef(dst, v []byte, refs *[]bodyRef) []byte {
	if refs != nil && len(v) >= refMin {
		*refs = append(*refs, bodyRef{at: len(dst), ext: v})
		return dst
	}
	return append(dst, v...)
}

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

// bodyPool recycles upstream request bodies (the gateway's bytes of them).
var bodyPool = sync.Pool{New: func() any { return new([]byte) }}

// refsPool recycles the references of split request bodies.
var refsPool = sync.Pool{New: func() any { return new([]bodyRef) }}

// upBody is an upstream request body being built, from pooled buffers:
// append to body, referencing large spans in refs, then set it on the
// request, and release it once the request was written.
type upBody struct {
	buf  *[]byte
	rp   *[]bodyRef
	body []byte
	refs []bodyRef
}

func getUpBody() upBody {
	u := upBody{buf: bodyPool.Get().(*[]byte), rp: refsPool.Get().(*[]bodyRef)}
	u.body, u.refs = (*u.buf)[:0], (*u.rp)[:0]
	return u
}

// set makes the body the request's: as it is, or as a splitBody when it
// references spans.
func (u *upBody) set(r *fasthttp.Request) {
	if len(u.refs) == 0 {
		r.SetBodyRaw(u.body)
		return
	}
	sb := &splitBody{buf: u.body, refs: u.refs}
	r.SetBodyStream(sb, sb.Len())
}

// release takes the body off the request (written by then) and returns
// the buffers to their pools.
func (u *upBody) release(r *fasthttp.Request) {
	r.SetBodyRaw(nil)
	clear(u.refs) // they point into the client's body
	*u.rp = u.refs[:0]
	refsPool.Put(u.rp)
	if cap(u.body) <= 8<<20 {
		*u.buf = u.body[:0]
		bodyPool.Put(u.buf)
	}
}
