package proxy

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// deadlineConn records the write deadlines set on it.
type deadlineConn struct {
	net.Conn
	deadlines []time.Time
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.deadlines = append(c.deadlines, t)
	return nil
}

// closeRecorder is a body that notes its Close (a stream ends its upstream
// call there).
type closeRecorder struct {
	*bytes.Reader // its WriteTo hands the whole body to one Write
	closed        bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestIdleWriteBodyRenewsTheDeadlinePerPiece(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), (5*writePiece)/16+1) // a bit over 5 pieces
	conn := &deadlineConn{}
	body := &closeRecorder{Reader: bytes.NewReader(data)}
	b := &idleWriteBody{body: body, conn: conn, idle: time.Minute}
	var out bytes.Buffer
	n, err := b.WriteTo(&out)
	if err != nil || n != int64(len(data)) || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("wrote %d of %d: %v", n, len(data), err)
	}
	if len(conn.deadlines) != 6 {
		t.Fatalf("%d deadlines for 6 pieces", len(conn.deadlines))
	}
	for i, d := range conn.deadlines {
		if i > 0 && d.Before(conn.deadlines[i-1]) {
			t.Fatal("a deadline went back in time")
		}
	}
	if err := b.Close(); err != nil || !body.closed {
		t.Fatal("Close did not reach the body")
	}
}

// A client that never reads makes the write fail after the idle time
// instead of blocking for ever.
func TestIdleWriteBodyCutsAClientThatStopsReading(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cl.(*net.TCPConn).SetReadBuffer(4096)
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.(*net.TCPConn).SetWriteBuffer(4096)
	b := &idleWriteBody{body: bytes.NewReader(make([]byte, 64<<20)), conn: srv, idle: 200 * time.Millisecond}
	_, err = b.WriteTo(srv)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
}
