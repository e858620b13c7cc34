package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"nanogate/internal/poll"
)

// server is a net/http upstream that counts the connections it accepts.
type server struct {
	url   string
	conns atomic.Int64
}

func startServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h, ConnState: func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	s.url = "http://" + ln.Addr().String() + "/v1"
	return s
}

func post(path string) *fasthttp.Request {
	r := fasthttp.AcquireRequest()
	r.Header.SetMethod("POST")
	r.SetRequestURI(path)
	r.SetBodyString(`{"x":1}`)
	return r
}

func TestReusesConnectionsAfterFullRead(t *testing.T) {
	for _, stream := range []bool{false, true} {
		s := startServer(t, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			if r.URL.Query().Get("chunked") != "" {
				w.Write([]byte("part1"))
				w.(http.Flusher).Flush()
				w.Write([]byte("part2"))
				return
			}
			w.Header().Set("Content-Length", "10")
			w.Write([]byte("part1part2"))
		})
		c, err := New(s.url, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 6; i++ {
			path := "/v1/x"
			if i%2 == 1 {
				path += "?chunked=1"
			}
			resp, err := c.Do(context.Background(), post(path), stream)
			if err != nil {
				t.Fatal(err)
			}
			var body []byte
			if stream {
				body, err = io.ReadAll(resp.BodyStream())
			} else {
				body = resp.Body()
			}
			if err != nil || string(body) != "part1part2" {
				t.Fatalf("stream=%v request %d: body %q err %v", stream, i, body, err)
			}
			resp.Release()
		}
		if n := s.conns.Load(); n != 1 {
			t.Errorf("stream=%v: %d connections for 6 sequential requests, want 1", stream, n)
		}
		c.Close()
	}
}

func TestCancelUnblocksAWaitingCall(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	s := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	c, _ := New(s.url, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Do(ctx, post("/v1/x"), false)
		done <- err
	}()
	<-arrived // the call waits for its answer
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a canceled call is still blocked")
	}
}

func TestDeadlineReportsDeadlineExceeded(t *testing.T) {
	s := startServer(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	c, _ := New(s.url, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Do(ctx, post("/v1/x"), false)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
}

func TestBodyCap(t *testing.T) {
	s := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("cl") != "" {
			w.Header().Set("Content-Length", "5000")
		}
		w.Write([]byte(strings.Repeat("x", 5000)))
	})
	c, _ := New(s.url, Options{MaxBodyBytes: 4096})
	for _, path := range []string{"/v1/x", "/v1/x?cl=1"} {
		_, err := c.Do(context.Background(), post(path), false)
		if !errors.Is(err, ErrBodyTooLarge) {
			t.Errorf("%s: err = %v, want ErrBodyTooLarge", path, err)
		}
	}
}

func TestStaleIdleConnectionIsNotUsed(t *testing.T) {
	s := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	})
	// Any wait is past an idle timeout of a nanosecond: the pooled
	// connection is dropped.
	c, _ := New(s.url, Options{IdleTimeout: time.Nanosecond})
	resp, err := c.Do(context.Background(), post("/v1/x"), false)
	if err != nil {
		t.Fatal(err)
	}
	resp.Release()
	resp, err = c.Do(context.Background(), post("/v1/x"), false)
	if err != nil {
		t.Fatalf("second call: %v", err)
	}
	resp.Release()
	if n := s.conns.Load(); n != 2 {
		t.Fatalf("connections = %d, want 2 (idle one retired)", n)
	}
}

func TestConnectionCloseAnswerIsNotPooled(t *testing.T) {
	s := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.Write([]byte("ok"))
	})
	c, _ := New(s.url, Options{})
	for i := 0; i < 3; i++ {
		resp, err := c.Do(context.Background(), post("/v1/x"), false)
		if err != nil {
			t.Fatalf("call %d after the server closed the previous connection: %v", i, err)
		}
		resp.Release()
	}
}

// A peer that closes an idle connection without saying so (no Connection:
// close) is caught by the peek before the connection is reused, once the
// connection has been idle past probeAfter: the call goes on a new one.
func TestSilentlyClosedIdleConnectionIsDetected(t *testing.T) {
	closed := make(chan struct{}, 4)
	s := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		nc, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		bw.Flush()
		nc.Close()
		closed <- struct{}{}
	})
	c, _ := New(s.url, Options{})
	defer c.Close()
	c.probeAfter = 0
	for i := 0; i < 3; i++ {
		resp, err := c.Do(context.Background(), post("/v1/x"), false)
		if err != nil {
			t.Fatalf("call %d after the server closed the previous connection: %v", i, err)
		}
		if string(resp.Body()) != "ok" {
			t.Fatalf("call %d: body %q", i, resp.Body())
		}
		resp.Release()
		<-closed
	}
	if n := s.conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3 (each closed one left)", n)
	}
}

// A buffered answer whose caller still holds it (its client has not read the
// answer yet) must not keep the only connection from the next call.
func TestBufferedResponseFreesItsConnectionBeforeRelease(t *testing.T) {
	s := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("answer"))
	})
	c, _ := New(s.url, Options{MaxConns: 1})
	defer c.Close()
	held, err := c.Do(context.Background(), post("/v1/x"), false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	next, err := c.Do(ctx, post("/v1/x"), false)
	if err != nil {
		t.Fatalf("second call with the first answer still held: %v", err)
	}
	if string(held.Body()) != "answer" || string(next.Body()) != "answer" {
		t.Fatalf("bodies %q, %q", held.Body(), next.Body())
	}
	next.Release()
	held.Release()
	if n := s.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1 reused", n)
	}
}

// A stream answer holds its connection until released; released before its
// end, the connection is closed, never handed to the next call.
func TestUnfinishedStreamClosesItsConnection(t *testing.T) {
	s := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("data: 1\n\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	c, _ := New(s.url, Options{MaxConns: 1})
	defer c.Close()
	resp, err := c.Do(context.Background(), post("/v1/x"), true)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 9)
	if _, err := io.ReadFull(resp.BodyStream(), buf); err != nil {
		t.Fatal(err)
	}
	resp.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	next, err := c.Do(ctx, post("/v1/x"), true)
	if err != nil {
		t.Fatalf("call after an abandoned stream: %v", err)
	}
	next.Release()
	if n := s.conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (the abandoned one closed)", n)
	}
}

// A caller waiting for a connection gets one that goes back to the pool, not
// only room for a new one: with every connection busy, then idle, a waiter
// must not sit out its whole deadline.
func TestWaiterGetsAConnectionReleasedToThePool(t *testing.T) {
	release := make(chan struct{})
	s := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Query().Get("hold") != "" {
			w.Write([]byte("part1"))
			w.(http.Flusher).Flush()
			<-release
		}
		w.Write([]byte("done"))
	})
	c, _ := New(s.url, Options{MaxConns: 2})
	defer c.Close()
	var held []*Response
	for i := 0; i < 2; i++ {
		resp, err := c.Do(context.Background(), post("/v1/x?hold=1"), true)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, resp)
	}
	results := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := c.Do(ctx, post("/v1/x"), false)
			if err == nil {
				resp.Release()
			}
			results <- err
		}()
	}
	// Once both waiters block on the full pool, finish the busy calls:
	// their connections go back to the pool, to be handed to the waiters.
	poll.Until(t, 10*time.Second, "two callers waiting for a connection", func() bool { return waitingInAcquire() == 2 })
	close(release)
	for _, resp := range held {
		if _, err := io.ReadAll(resp.BodyStream()); err != nil {
			t.Fatal(err)
		}
		resp.Release()
	}
	for i := 0; i < 2; i++ {
		if err := <-results; err != nil {
			t.Fatalf("a waiter: %v", err)
		}
	}
	if n := s.conns.Load(); n != 2 {
		t.Fatalf("%d connections, want the 2 reused", n)
	}
}

// waitingInAcquire counts the goroutines blocked in the select of
// Client.acquire, waiting for a connection: a wait no counter shows.
func waitingInAcquire() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	waiting := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, " [select") && strings.Contains(g, "upstream.(*Client).acquire(") {
			waiting++
		}
	}
	return waiting
}
