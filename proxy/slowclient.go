package proxy

import (
	"io"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// writePiece is the most written to the client under one write deadline: a
// client reading at least writePiece per server.write_timeout (17 KB/s at
// the default 60s) is never cut off. Larger pieces cost fewer renewals and,
// with a buffered writer that is not empty, fewer copies through its buffer.
const writePiece = 1 << 20

// setBody answers with r as the body (size -1 for a chunked stream), each
// write of it bounded by server.write_timeout. fasthttp's WriteTimeout is one
// deadline for the whole response: too short for an image stream that takes
// a minute, and with none a client that stops reading holds its request (and,
// for a stream, the upstream connection behind it) forever. Here the deadline
// is renewed before every piece, so only a client that stops reading for
// write_timeout is cut off; its stream then ends as a client that left,
// closing the upstream call without counting against the provider.
func setBody(ctx *fasthttp.RequestCtx, st *State, r io.Reader, size int) {
	// A context served without a connection (in-process benchmarks) has no
	// socket to bound.
	if d, conn := st.Config.Server.WriteTimeout, ctx.Conn(); d > 0 && conn != nil {
		r = &idleWriteBody{body: r, conn: conn, idle: d}
	}
	ctx.SetBodyStream(r, size)
}

// idleWriteBody is a response body whose writes each get a fresh write
// deadline on the client's connection.
type idleWriteBody struct {
	body io.Reader
	conn net.Conn
	idle time.Duration
}

// SupportsBodyWriteTo tells fasthttp to use WriteTo, which is where the
// deadline is renewed.
func (b *idleWriteBody) SupportsBodyWriteTo() bool { return true }

// Read serves copiers that do not use WriteTo; fasthttp's writer does.
func (b *idleWriteBody) Read(p []byte) (int, error) { return b.body.Read(p) }

// WriteTo writes the body through a writer that renews the deadline.
func (b *idleWriteBody) WriteTo(w io.Writer) (int64, error) {
	iw := &idleWriter{w: w, conn: b.conn, idle: b.idle}
	if wt, ok := b.body.(io.WriterTo); ok {
		return wt.WriteTo(iw)
	}
	buf := make([]byte, 32<<10)
	return io.CopyBuffer(iw, b.body, buf)
}

// Close closes the body: fasthttp calls it once the response is written or
// abandoned, and a stream's Close ends its upstream call.
func (b *idleWriteBody) Close() error {
	if c, ok := b.body.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

type idleWriter struct {
	w    io.Writer
	conn net.Conn
	idle time.Duration
}

func (iw *idleWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		piece := p[n:min(len(p), n+writePiece)]
		if err := iw.conn.SetWriteDeadline(time.Now().Add(iw.idle)); err != nil {
			return n, err
		}
		m, err := iw.w.Write(piece)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
