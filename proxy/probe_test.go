//go:build unix && !aix

package proxy

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// connPairs returns n connected loopback TCP pairs: the server's side (what
// the gateway watches) and the client's.
func connPairs(t *testing.T, n int) (srv, cli []net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); s.Close() })
		srv, cli = append(srv, s), append(cli, c)
	}
	return srv, cli
}

// The requests of every connection share one timer. A request stopped
// before its delay is never peeked at, even when its client leaves later;
// one still waiting past the delay is, and its gone is called when its
// client leaves; stopping a peeked one leaves the connection readable; and
// the queue empties.
func TestClientWatchSharesOneTimer(t *testing.T) {
	const n = 30
	srv, cli := connPairs(t, n)
	cw := newClientWatch(20 * time.Millisecond)
	var gone [n]atomic.Bool
	stops := make([]func(), n)
	for i := range n {
		stops[i] = cw.watchClient(srv[i], func() { gone[i].Store(true) })
	}
	// 0-9: stopped at once, then their clients leave.
	for i := range 10 {
		stops[i]()
		stops[i]() // a second stop is harmless
		cli[i].Close()
	}
	// 10-19: their clients leave while they wait.
	for i := 10; i < 20; i++ {
		cli[i].Close()
	}
	waitFor(t, "the peeks to see the leaving clients", func() bool {
		for i := 10; i < 20; i++ {
			if !gone[i].Load() {
				return false
			}
		}
		return true
	})
	// 20-29: still connected, watched: stopping leaves them readable.
	for i := 20; i < n; i++ {
		stops[i]()
		if _, err := cli[i].Write([]byte{'x'}); err != nil {
			t.Fatal(err)
		}
		srv[i].SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound against hanging
		var b [1]byte
		if _, err := srv[i].Read(b[:]); err != nil || b[0] != 'x' {
			t.Fatalf("read after stop: %q, %v", b[:], err)
		}
	}
	for i := 10; i < 20; i++ {
		stops[i]()
	}
	for i := range n {
		if want := i >= 10 && i < 20; gone[i].Load() != want {
			t.Errorf("request %d: gone %v, want %v", i, gone[i].Load(), want)
		}
	}
	cw.mu.Lock()
	defer cw.mu.Unlock()
	if len(cw.queue) != 0 || cw.armed {
		t.Errorf("queue %d, armed %v after every request ended", len(cw.queue), cw.armed)
	}
}
