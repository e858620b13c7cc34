// Package proxy is nanogate's HTTP face: the route table, authentication,
// and the lifecycle of a request read top to bottom in handleChat:
// authenticate, parse (package openai), run the journey (package gateway),
// respond (package openai renders), close the call (which bills it), log.
package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"nanogate/auth"
	"nanogate/batch"
	"nanogate/config"
	"nanogate/gateway"
	"nanogate/images"
	"nanogate/internal/inflight"
	"nanogate/internal/jsonx"
	"nanogate/keys"
	"nanogate/metrics"
	"nanogate/openai"
	"nanogate/ratelimit"
)

// State is everything a reload replaces at once. Requests take one State at
// their start and keep it to their end.
type State struct {
	Config  *config.Config
	Keys    *auth.Table
	Gateway *gateway.Gateway
	Format  openai.Format
	// Offload serves /images/ links when the filesystem store is on.
	Offload *images.Offloader
	// Accounting answers the usage APIs; nil when not set up.
	Accounting *gateway.Accounting
	// Limiter is asked about Redis for /readyz.
	Limiter ratelimit.Limiter
	// Batches serves the Files and Batches APIs; nil when not set up.
	Batches *batch.Manager
	// Directory serves the admin API of keys and teams, and outlives
	// states: a change there builds the next State. nil: the
	// configuration's keys only.
	Directory *keys.Directory
}

// Server serves the OpenAI-compatible API.
type Server struct {
	state atomic.Pointer[State]
	log   *zap.Logger
	srv   *fasthttp.Server
	// admin serves /admin/* and /metrics on server.admin_listen; nil when
	// they share srv.
	admin   *fasthttp.Server
	ids     *idGen
	clients *clientWatch
	metrics *metrics.Metrics
	prom    fasthttp.RequestHandler
	guard   *authGuard
	// trusted are the proxies whose X-Forwarded-For names the client.
	trusted trusted
	// inflight bounds the bytes requests in flight hold
	// (server.max_bytes_in_flight), read at start.
	inflight *inflight.Bytes
}

// New returns a server for st, recording into m.
func New(st *State, log *zap.Logger, m *metrics.Metrics) *Server {
	s := &Server{log: log, ids: newIDGen(), clients: newClientWatch(watchDelay), metrics: m, guard: newAuthGuard(60)}
	s.prom = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	s.state.Store(st)
	sc := st.Config.Server
	s.trusted = parseTrusted(sc.TrustedProxies)
	s.inflight = inflight.New(bytesBound(sc))
	m.BytesInFlightLimit.Set(float64(s.inflight.Size()))
	s.srv = s.newHTTPServer(sc, s.handle)
	if sc.AdminListen != "" {
		s.admin = s.newHTTPServer(sc, s.handleAdmin)
	}
	return s
}

// newHTTPServer is a fasthttp server of sc's settings calling h.
func (s *Server) newHTTPServer(sc config.Server, h fasthttp.RequestHandler) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                       h,
		ErrorHandler:                  s.handleServerError,
		Name:                          "nanogate",
		ReadTimeout:                   sc.ReadTimeout,
		WriteTimeout:                  sc.WriteTimeout,
		IdleTimeout:                   sc.IdleTimeout,
		MaxRequestBodySize:            int(sc.MaxBodyBytes),
		ReadBufferSize:                sc.MaxHeaderBytes,
		Concurrency:                   sc.Concurrency,
		DisablePreParseMultipartForm:  true,
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: false,
		CloseOnShutdown:               true,
		Logger:                        zapPrintf{s.log},
	}
}

// ServeAdmin accepts connections of the admin listener (server.admin_listen)
// on ln until Shutdown.
func (s *Server) ServeAdmin(ln net.Listener) error { return s.admin.Serve(ln) }

// SetState swaps the configuration for new requests (reload).
func (s *Server) SetState(st *State) { s.state.Store(st) }

// State returns the configuration in force.
func (s *Server) State() *State { return s.state.Load() }

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.srv.Serve(ln) }

// Shutdown stops accepting and waits for in-flight requests, streams
// included, until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.admin != nil {
		s.admin.ShutdownWithContext(ctx)
	}
	return s.srv.ShutdownWithContext(ctx)
}

// Handler exposes the request handler (tests and benchmarks).
func (s *Server) Handler() fasthttp.RequestHandler { return s.handle }

func (s *Server) handle(ctx *fasthttp.RequestCtx) { s.handleOn(ctx, false) }

// handleAdmin serves the admin listener.
func (s *Server) handleAdmin(ctx *fasthttp.RequestCtx) { s.handleOn(ctx, true) }

func (s *Server) handleOn(ctx *fasthttp.RequestCtx, adminListener bool) {
	st := s.state.Load()
	rid := s.ids.requestID(ctx.Request.Header.Peek("x-request-id"))
	ctx.Response.Header.Set("x-request-id", rid)
	defer s.recoverPanic(ctx, rid)
	s.serve(ctx, st, rid, adminListener)
}

// recoverPanic turns a panic in a handler into a 500 in OpenAI's envelope with
// the request id, logged once (without the panic value, which could hold
// request data) and counted. The stack is logged: it names code, not data.
func (s *Server) recoverPanic(ctx *fasthttp.RequestCtx, rid string) {
	v := recover()
	if v == nil {
		return
	}
	s.metrics.Panics.Inc()
	s.log.Error("handler panic", zap.String("request_id", rid), zap.String("path", string(ctx.Path())),
		zap.String("panic_type", fmt.Sprintf("%T", v)), zap.Stack("stack"))
	ctx.Response.Reset()
	ctx.Response.Header.Set("x-request-id", rid)
	writeError(ctx, &apiError{Status: fasthttp.StatusInternalServerError, Type: "server_error", Code: "internal_error",
		Message: "Internal error (request " + rid + ")."})
}

// handleServerError answers errors fasthttp meets before a handler runs, in
// OpenAI's envelope.
func (s *Server) handleServerError(ctx *fasthttp.RequestCtx, err error) {
	rid := s.ids.requestID(ctx.Request.Header.Peek("x-request-id"))
	ctx.Response.Header.Set("x-request-id", rid)
	defer func() {
		s.log.Info("request", zap.String("request_id", rid), zap.String("route", "invalid"),
			zap.Int("status", ctx.Response.StatusCode()))
	}()
	var small *fasthttp.ErrSmallBuffer
	if errors.As(err, &small) {
		// The rest of the headers (and any body) is still unread: drained,
		// so that closing does not reset the connection before the client
		// reads the 431.
		drainPending(ctx.Conn(), maxHeaderDrain, 50*time.Millisecond)
		writeError(ctx, &apiError{Status: fasthttp.StatusRequestHeaderFieldsTooLarge, Type: "invalid_request_error",
			Code: "invalid_request", Message: "Request headers too large."})
		return
	}
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		s.drainBody(ctx)
		writeError(ctx, errTooLarge)
		return
	}
	// fasthttp wraps the error of a header read ("error when reading
	// request headers: ..."): errors.As finds the timeout inside.
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		writeError(ctx, &apiError{Status: fasthttp.StatusRequestTimeout, Type: "invalid_request_error",
			Code: "request_timeout", Message: "Timed out reading the request."})
		return
	}
	writeError(ctx, errInvalid("", "The request could not be parsed as HTTP."))
}

// drainBody reads and drops the rest of an oversized body, bounded, before
// the 413 is written. Closing with unread bytes makes the kernel reset the
// connection, and clients (the OpenAI SDKs included) then report a broken pipe
// instead of the 413.
func (s *Server) drainBody(ctx *fasthttp.RequestCtx) {
	ctx.SetConnectionClose()
	cl := int64(ctx.Request.Header.ContentLength())
	limit := 2 * s.state.Load().Config.Server.MaxBodyBytes
	if cl <= 0 || cl > limit {
		return
	}
	// Part of the body may already sit in fasthttp's buffer: stop when the
	// client has nothing more to send.
	drainPending(ctx.Conn(), cl, 250*time.Millisecond)
}

// maxHeaderDrain bounds what drainPending reads after headers too large.
const maxHeaderDrain = 256 << 10

// drainPending reads and drops what the client sends, up to max bytes,
// until it pauses for pause; for an answer given before the request was
// read.
func drainPending(c net.Conn, max int64, pause time.Duration) {
	buf := make([]byte, 32<<10)
	for total := int64(0); total < max; {
		c.SetReadDeadline(time.Now().Add(pause))
		n, err := c.Read(buf)
		total += int64(n)
		if err != nil {
			break
		}
	}
	c.SetReadDeadline(time.Time{})
}

func (s *Server) handleModels(ctx *fasthttp.RequestCtx, st *State, caller *auth.Caller) {
	b := make([]byte, 0, 256)
	b = append(b, `{"object":"list","data":[`...)
	n := 0
	for _, m := range st.Gateway.Router().Models() {
		if !caller.Allows(m) {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendModel(b, m)
	}
	b = append(b, "]}\n"...)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// handleModel answers GET /v1/models/{id}: the model object when the key
// may use a model of that id, else OpenAI's 404 model_not_found (a model
// the key may not use is not revealed).
func (s *Server) handleModel(ctx *fasthttp.RequestCtx, st *State, caller *auth.Caller, id string) {
	if !st.Gateway.Router().Knows(id) || !caller.Allows(id) {
		writeError(ctx, &apiError{Status: fasthttp.StatusNotFound, Type: "invalid_request_error", Code: "model_not_found",
			Param: "model", Message: "The model '" + id + "' does not exist or you do not have access to it."})
		return
	}
	b := appendModel(make([]byte, 0, 128), id)
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}

// appendModel writes OpenAI's model object.
func appendModel(b []byte, m string) []byte {
	b = append(b, `{"id":`...)
	b = jsonx.AppendString(b, m)
	b = append(b, `,"object":"model","created":`...)
	b = append(b, modelCreated(m)...)
	return append(b, `,"owned_by":"google"}`...)
}

// modelCreated gives the release dates of the known models (OpenAI's list
// shape has a created timestamp).
func modelCreated(m string) string {
	switch m {
	case "gemini-2.5-flash-image-preview":
		return "1756166400"
	case "gemini-2.5-flash-image":
		return "1759363200"
	}
	return "0"
}

func (s *Server) handleReady(ctx *fasthttp.RequestCtx, st *State) {
	ctx.SetContentType("application/json")
	if !st.Gateway.Router().Usable() {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.SetBodyString(`{"status":"unavailable","reason":"no usable provider"}` + "\n")
		return
	}
	if rl, ok := st.Limiter.(interface{ Ping(context.Context) error }); ok && st.Config.Redis != nil {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		err := rl.Ping(c)
		cancel()
		// With on_outage: open the gateway keeps serving without Redis:
		// taking every replica out of its load balancer at once would turn
		// a degraded state into an outage. It says so, but stays ready.
		if err != nil && st.Config.Redis.OnOutage == "closed" {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			ctx.SetBodyString(`{"status":"unavailable","reason":"redis unreachable"}` + "\n")
			return
		}
		if err != nil {
			ctx.SetBodyString(`{"status":"ready","redis":"unreachable: limits are per replica, records are spooled"}` + "\n")
			return
		}
	}
	if a := st.Accounting; a != nil && a.Recorder != nil {
		if ok, why := a.Recorder.Healthy(); !ok {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			b, _ := json.Marshal(map[string]string{"status": "unavailable", "reason": "usage records: " + why})
			ctx.SetBody(append(b, '\n'))
			return
		}
	}
	ctx.SetBodyString(`{"status":"ready"}` + "\n")
}

type zapPrintf struct{ l *zap.Logger }

// Printf logs that fasthttp met a connection error, without its text: those
// messages can quote raw request headers, keys included.
func (z zapPrintf) Printf(format string, args ...any) {
	z.l.Debug("connection error")
}

// elapsedMS is a latency for the log.
func elapsedMS(start time.Time) float64 {
	return float64(time.Since(start).Microseconds()) / 1000
}
