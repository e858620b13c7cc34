package proxy

import (
	"io"
	"math"
	"runtime/debug"
	"time"

	"github.com/valyala/fasthttp"

	"nanogate/config"
	"nanogate/internal/inflight"
)

// overloadRetry is the delay a request refused by the in-flight bound is
// told to wait: images take seconds, and the room it needs comes back as
// the answers in flight are written.
const overloadRetry = 2 * time.Second

var errOverloaded = &apiError{Status: fasthttp.StatusServiceUnavailable, Type: "server_error", Code: "server_overloaded",
	RetryAfter: overloadRetry,
	Message:    "The gateway holds as many images in flight as its memory allows (server.max_bytes_in_flight); retry shortly."}

// bytesBound is the in-flight bound of sc: server.max_bytes_in_flight, else
// half the runtime's memory limit in force (server.memory_limit, GOMEMLIMIT
// or the cgroup's), else none (0). The other half is the collector's room:
// with the heap at the limit the collector would run without pause.
func bytesBound(sc config.Server) int64 {
	if sc.MaxBytesInFlight > 0 {
		return int64(sc.MaxBytesInFlight)
	}
	if limit := debug.SetMemoryLimit(-1); limit > 0 && limit != math.MaxInt64 {
		return limit / 2
	}
	return 0
}

// holdBytes claims n bytes of the in-flight bound for a request, or
// answers why not. The hold is released when the answer has been written
// (setHeldBody) or, on every other path, by the handler.
func (s *Server) holdBytes(n int64) (*inflight.Hold, *apiError) {
	h := s.inflight.Hold(n)
	if h == nil {
		s.metrics.Overloaded.Inc()
		return nil, errOverloaded
	}
	return h, nil
}

// setHeldBody is setBody for an answer whose request holds bytes of the
// in-flight bound: the claim passes to the body, and is released when
// fasthttp is done with it, written or abandoned.
func setHeldBody(ctx *fasthttp.RequestCtx, st *State, r io.Reader, size int, h *inflight.Hold) {
	setBody(ctx, st, &heldBody{body: r, hold: h.Pass()}, size)
}

// heldBody releases its request's hold when closed, and passes WriteTo
// through so that fasthttp still writes the body without a copy.
type heldBody struct {
	body io.Reader
	hold *inflight.Hold
}

// SupportsBodyWriteTo tells fasthttp to use WriteTo.
func (b *heldBody) SupportsBodyWriteTo() bool { return true }

// Read serves copiers that do not use WriteTo.
func (b *heldBody) Read(p []byte) (int, error) { return b.body.Read(p) }

// WriteTo writes the body with its own WriteTo when it has one.
func (b *heldBody) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := b.body.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.CopyBuffer(w, b.body, make([]byte, 32<<10))
}

// Close closes the body and releases the hold.
func (b *heldBody) Close() error {
	defer b.hold.Release()
	if c, ok := b.body.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
