package load

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestReadsEveryBodyShapeOnOneConnection: Content-Length, chunked (a stream)
// and an error status all leave the connection ready for the next request.
func TestReadsEveryBodyShapeOnOneConnection(t *testing.T) {
	big := strings.Repeat("x", 300<<10) // larger than the reader's buffer
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/length":
			w.Write([]byte(big))
		case "/chunked":
			for range 3 {
				w.Write([]byte("data: " + big[:1000] + "\n\n"))
				w.(http.Flusher).Flush()
			}
		default:
			http.Error(w, "no", http.StatusTeapot)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	c, err := Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		path   string
		status int
		n      int64
	}{{"/length", 200, int64(len(big))}, {"/chunked", 200, 3 * 1008}, {"/nope", 418, 3}, {"/length", 200, int64(len(big))}} {
		req, err := NewPost(srv.URL+tc.path, []byte(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		var sink bytes.Buffer
		st, n, err := c.Do(req.Raw, &sink)
		if err != nil || st != tc.status || n != tc.n || int64(sink.Len()) != n {
			t.Fatalf("%s: status %d, %d bytes (%d kept), %v; want %d, %d", tc.path, st, n, sink.Len(), err, tc.status, tc.n)
		}
	}
}

// TestFixedMeasuresFromTheDueTime: an answer slower than the interval delays
// the following requests, and their latencies include the wait.
func TestFixedMeasuresFromTheDueTime(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
	}))
	defer srv.Close()
	req, _ := NewPost(srv.URL, []byte(`{}`))
	// Due every 10 ms, served every 20 ms: the backlog grows by 10 ms a request.
	r := Fixed(req, 100, 0, 200*time.Millisecond)
	if r.OK < 5 || r.Errors+r.Bad != 0 {
		t.Fatalf("ok %d, errors %d, bad %d", r.OK, r.Errors, r.Bad)
	}
	if max := r.Lat[len(r.Lat)-1]; max < 60*time.Millisecond {
		t.Fatalf("largest latency %v: the wait behind slow answers was not counted", max)
	}
}

// TestClosedBackoffCountsStatusesAndWaits: refusals are counted by status,
// and a client told to wait sends nothing more before its backoff ends.
func TestClosedBackoffCountsStatusesAndWaits(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	req, err := NewPost(srv.URL+"/", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	// A backoff far longer than the run: each connection stops at its first 503.
	r := ClosedBackoff(req, 2, 0, 300*time.Millisecond, time.Hour/2)
	if r.Status[503] == 0 || r.Status[503] != r.Bad || r.OK == 0 {
		t.Fatalf("ok %d, bad %d, by status %v", r.OK, r.Bad, r.Status)
	}
	if r.Status[503] > 2 {
		t.Fatalf("%d answers 503 for 2 connections: a client did not wait", r.Status[503])
	}
}
