package fakeup

import (
	"encoding/binary"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ImageHost is a web server holding the images that clients name by URL in
// their requests, on loopback. The query of any path says what it answers:
//
//	size=N       a valid PNG of N bytes (PNG(N)); default: fixtures/tiny.png
//	n=K          image K of that size (NthPNG), to tell images apart
//	chunked=1    no Content-Length: the body goes out in flushed pieces
//	delay=D      wait D (a Go duration) before answering
//	stall=1      send the headers, then hold the body back until Unstall
//	bomb=1       the PNG's header declares 100000x100000 pixels
//
// It counts the body bytes it managed to write, so a test can tell how much
// of its images a client read (plus what socket buffers absorbed).
type ImageHost struct {
	srv      *http.Server
	ln       net.Listener
	sent     atomic.Int64
	requests atomic.Int64
	inFlight atomic.Int64
	maxIn    atomic.Int64

	mu      sync.Mutex
	stalled chan struct{} // closed by Unstall
	gateN   int64         // requests wait until this many are in flight at once
	gate    chan struct{} // closed when gateN was reached
}

// StartImageHost starts an ImageHost on a free loopback port.
func StartImageHost() (*ImageHost, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &ImageHost{ln: ln, stalled: make(chan struct{})}
	h.srv = &http.Server{Handler: http.HandlerFunc(h.serve), ReadHeaderTimeout: 10 * time.Second}
	go h.srv.Serve(ln)
	return h, nil
}

// URL is the host's base URL, http://127.0.0.1:port.
func (h *ImageHost) URL() string { return "http://" + h.ln.Addr().String() }

// Addr is the host's ip:port.
func (h *ImageHost) Addr() string { return h.ln.Addr().String() }

// Sent returns the body bytes written so far, over every request.
func (h *ImageHost) Sent() int64 { return h.sent.Load() }

// Requests returns the requests received.
func (h *ImageHost) Requests() int64 { return h.requests.Load() }

// MaxInFlight returns the most requests that were being answered at once.
func (h *ImageHost) MaxInFlight() int64 { return h.maxIn.Load() }

// Unstall lets the bodies held back by stall=1 go, now and from now on.
func (h *ImageHost) Unstall() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.stalled:
	default:
		close(h.stalled)
	}
}

// HoldUntilInFlight makes requests wait, before answering, until n of them
// are in flight at once; from then on none waits. It proves that a client
// fetches n images in parallel: a client that fetches fewer at once never
// gets an answer (until it gives up).
func (h *ImageHost) HoldUntilInFlight(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gateN, h.gate = int64(n), make(chan struct{})
}

// Close stops the server and its connections.
func (h *ImageHost) Close() {
	h.Unstall()
	h.srv.Close()
}

func (h *ImageHost) serve(w http.ResponseWriter, r *http.Request) {
	h.requests.Add(1)
	in := h.inFlight.Add(1)
	defer h.inFlight.Add(-1)
	for {
		m := h.maxIn.Load()
		if in <= m || h.maxIn.CompareAndSwap(m, in) {
			break
		}
	}
	h.mu.Lock()
	gate, gateN, stalled := h.gate, h.gateN, h.stalled
	if gate != nil && in >= gateN {
		select {
		case <-gate:
		default:
			close(gate)
		}
	}
	h.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}

	q := r.URL.Query()
	if d, err := time.ParseDuration(q.Get("delay")); err == nil {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	size, _ := strconv.Atoi(q.Get("size"))
	n, _ := strconv.Atoi(q.Get("n"))
	body := NthPNG(size, n)
	if q.Get("bomb") == "1" {
		body = append([]byte(nil), body...)
		binary.BigEndian.PutUint32(body[16:20], 100000)
		binary.BigEndian.PutUint32(body[20:24], 100000)
	}
	chunked := q.Get("chunked") == "1"
	w.Header().Set("Content-Type", "image/png")
	if !chunked {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(http.StatusOK)
	if q.Get("stall") == "1" {
		w.(http.Flusher).Flush()
		select {
		case <-stalled:
		case <-r.Context().Done():
			return
		}
	}
	const piece = 32 << 10
	for i := 0; i < len(body); i += piece {
		k, err := w.Write(body[i:min(i+piece, len(body))])
		h.sent.Add(int64(k))
		if err != nil {
			return
		}
		if chunked {
			w.(http.Flusher).Flush()
		}
	}
}
