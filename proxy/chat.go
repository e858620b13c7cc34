package proxy

import (
	"bytes"
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"nanogate/auth"
	"nanogate/gateway"
	"nanogate/internal/clip"
	"nanogate/internal/inflight"
	"nanogate/internal/reqid"
	"nanogate/internal/safemath"
	"nanogate/metrics"
	"nanogate/openai"
	"nanogate/provider"
	"nanogate/router"
)

// reqLog collects the fields of the one log line a request gets.
type reqLog struct {
	start   time.Time
	id      string
	caller  *auth.Caller
	model   string
	stream  bool
	served  router.Served
	status  int
	usage   gateway.Usage
	finish  string
	err     error
	gone    bool
	errCode string
	known   interface{ Knows(model string) bool } // the router (an interface value: no closure per request)
	cost    int64
	size    string     // the image size billed (bounded: the catalogue's or 512/NK)
	ip      netip.Addr // the client's (server.trusted_proxies)
	span    trace.Span // nil when no span was started
	route   string     // "chat" when empty
}

func (l *reqLog) routeName() string {
	if l.route == "" {
		return "chat"
	}
	return l.route
}

// closeCall closes the request's call, which bills it, and keeps the bill
// for the log line. Every handler that made a call closes it before its
// log line, whatever happened; the log line itself never bills.
func (l *reqLog) closeCall(call *gateway.Call) {
	b := call.Close()
	l.cost, l.size = b.CostMicros, b.Size
}

func (s *Server) logRequest(l *reqLog) {
	s.endSpan(l)
	fp := fieldPool.Get().(*[]zap.Field)
	fields := (*fp)[:0]
	fields = append(fields,
		zap.String("request_id", l.id),
		zap.String("route", l.routeName()),
		zap.String("client_ip", l.ip.String()),
		zap.String("model", clip.String(l.model)),
		zap.Bool("stream", l.stream),
		zap.Int("status", l.status),
		zap.Float64("latency_ms", elapsedMS(l.start)),
	)
	if l.caller != nil {
		fields = append(fields, zap.String("key", l.caller.Name), zap.String("team", l.caller.Team))
	}
	if l.served.Attempts > 0 {
		fields = append(fields, zap.String("provider", l.served.Provider), zap.Int("attempts", l.served.Attempts),
			zap.Strings("tried", l.served.Tried))
	}
	fields = append(fields,
		zap.Int64("images", l.usage.Images),
		zap.Int64("prompt_tokens", l.usage.PromptTokens),
		zap.Int64("completion_tokens", l.usage.CompletionTokens),
		zap.Int64("cost_micros", l.cost),
	)
	if l.finish != "" {
		fields = append(fields, zap.String("finish_reason", l.finish))
	}
	if l.errCode != "" {
		fields = append(fields, zap.String("error_code", l.errCode))
	}
	if l.err != nil {
		// provider.Error messages are scrubbed of keys and upstream hosts;
		// they may still quote a value of the request.
		fields = append(fields, zap.String("error", clip.To(l.err.Error(), maxMessage)))
	}
	if l.gone {
		fields = append(fields, zap.Bool("client_gone", true))
	}
	s.log.Info("request", fields...)
	clear(fields) // no string of this request stays reachable from the pool
	*fp = fields[:0]
	fieldPool.Put(fp)
	s.record(l)
}

// fieldPool holds the request line's fields (about 1.3 KB a request):
// zap encodes them within Info and keeps none of them.
var fieldPool = sync.Pool{New: func() any { s := make([]zap.Field, 0, 20); return &s }}

// record updates the metrics of a finished request. The model label is the
// client's string only when a provider maps it, so labels stay bounded.
func (s *Server) record(l *reqLog) {
	m := s.metrics
	model := l.model
	if model != "" && (l.known == nil || !l.known.Knows(model)) {
		model = "unknown"
	}
	route := l.routeName()
	m.Requests.WithLabelValues(route, metrics.Status(l.status), l.served.Provider, model).Inc()
	m.RequestDuration.WithLabelValues(route).Observe(time.Since(l.start).Seconds())
	if l.served.Attempts > 0 {
		m.Attempts.WithLabelValues(route).Observe(float64(l.served.Attempts))
	}
	if l.gone {
		m.ClientGone.Inc()
	}
	if l.usage.Images > 0 || l.usage.TotalTokens > 0 {
		size := l.size
		if model == "unknown" {
			size = "" // labels stay bounded
		}
		m.Images.WithLabelValues(l.served.Provider, model, size).Add(float64(l.usage.Images))
		m.Tokens.WithLabelValues(l.served.Provider, model, "prompt").Add(float64(l.usage.PromptTokens))
		m.Tokens.WithLabelValues(l.served.Provider, model, "text").Add(float64(l.usage.TextTokens))
		m.Tokens.WithLabelValues(l.served.Provider, model, "image").Add(float64(l.usage.ImageTokens))
		m.CostMicros.WithLabelValues(l.served.Provider, model).Add(float64(l.cost))
		m.CostUSD.WithLabelValues(l.served.Provider, model).Add(float64(l.cost) / 1e6)
	}
	if l.caller != nil {
		team := l.caller.Team
		if team == "" {
			team = "none"
		}
		m.TeamRequests.WithLabelValues(team, metrics.Status(l.status)).Inc()
		if l.usage.Images > 0 || l.cost > 0 {
			m.TeamImages.WithLabelValues(team, l.served.Provider).Add(float64(l.usage.Images))
			m.TeamCostUSD.WithLabelValues(team, l.served.Provider).Add(float64(l.cost) / 1e6)
		}
	}
}

// journeyError maps an error of the gateway's journey to the client's answer.
func (s *Server) journeyError(err error, call *gateway.Call) *apiError {
	return openai.ErrorFor(err, clip.String(call.Req.Model), call)
}

func (s *Server) fail(ctx *fasthttp.RequestCtx, l *reqLog, e *apiError) {
	writeError(ctx, e)
	l.status, l.errCode = e.Status, e.Code
	s.logRequest(l)
}

func (s *Server) handleChat(ctx *fasthttp.RequestCtx, st *State, rid string, caller *auth.Caller) {
	l := &reqLog{start: time.Now(), id: rid, known: st.Gateway.Router(), caller: caller,
		ip: s.clientAddr(ctx)}
	if !jsonContentType(ctx.Request.Header.ContentType()) {
		s.fail(ctx, l, errContentType)
		return
	}
	req, err := openai.ParseChatRequest(ctx.PostBody())
	if err != nil {
		s.fail(ctx, l, toAPIError(err, ""))
		return
	}
	l.model, l.stream = req.Model, req.Stream
	format := st.Format
	if h := ctx.Request.Header.Peek("x-nanogate-image-format"); len(h) > 0 {
		f, ok := openai.ParseFormat(string(h))
		if !ok {
			s.fail(ctx, l, errInvalid("x-nanogate-image-format", "The header x-nanogate-image-format must be markdown, data_url or images."))
			return
		}
		format = f
	}
	call := &gateway.Call{Caller: caller, Req: req}
	forward := !req.Stream && openai.Forwards(format, st.Gateway.Offloads(call)) && st.Gateway.Forwards(call)
	var answer int64
	switch {
	case forward:
		answer = st.Gateway.ForwardedBytes(call)
	case req.Stream:
		answer = st.Gateway.StreamBytes(call)
	default:
		answer = st.Gateway.AnswerBytes(req)
	}
	hold, e := s.holdBytes(safemath.Add(int64(len(ctx.PostBody())), answer))
	if e != nil {
		s.fail(ctx, l, e)
		return
	}
	// Every path releases the hold; an answer's body releases it once written.
	defer hold.Release()
	// The upstream call lives as long as the request, and ends early when
	// the client goes away.
	rctx, cancel := context.WithCancel(reqid.With(context.Background(), rid))
	rctx = s.startSpan(ctx, rctx, l, "chat.completions")
	stopWatch := s.clients.watchClient(ctx.Conn(), func() { l.gone = true; cancel() })

	if req.Stream {
		s.chatStream(ctx, st, l, req, format, rctx, cancel, stopWatch, hold)
		return
	}
	call.ID = s.ids.next()
	if forward {
		s.chatForward(ctx, st, l, call, format, rctx, cancel, stopWatch, hold)
		return
	}
	ans, served, err := st.Gateway.Chat(rctx, call)
	stopWatch()
	cancel()
	l.served = served
	setCallHeaders(ctx, call)
	l.closeCall(call)
	if err != nil {
		e := s.journeyError(err, call)
		triedMessage(e, served.Tried)
		setLastTried(ctx, served)
		l.err = err
		s.fail(ctx, l, e)
		return
	}
	s.chatAnswer(ctx, st, l, ans, format, hold)
}

// setLastTried names, on a failed answer, the provider whose failure it
// reports: the last one tried, if any was.
func setLastTried(ctx *fasthttp.RequestCtx, served router.Served) {
	if n := len(served.Tried); n > 0 {
		ctx.Response.Header.Set("x-nanogate-provider", served.Tried[n-1])
	}
}

// chatAnswer writes a whole chat answer (its call closed) and logs it.
func (s *Server) chatAnswer(ctx *fasthttp.RequestCtx, st *State, l *reqLog, ans *gateway.Answer, format openai.Format, hold *inflight.Hold) {
	ctx.Response.Header.Set("x-nanogate-provider", ans.Served.Provider)
	body := openai.NewChatBody(ans, l.id, l.model, format)
	ctx.SetContentType("application/json")
	setHeldBody(ctx, st, body, body.Len(), hold)
	l.status, l.usage = fasthttp.StatusOK, ans.Usage
	if len(ans.Result.Choices) > 0 {
		l.finish = ans.Result.Choices[0].FinishReason
	}
	s.logRequest(l)
}

func (s *Server) chatStream(ctx *fasthttp.RequestCtx, st *State, l *reqLog, req *provider.ChatRequest, format openai.Format,
	rctx context.Context, cancel context.CancelFunc, stopWatch func(), hold *inflight.Hold) {
	call := &gateway.Call{ID: s.ids.next(), Caller: l.caller, Req: req}
	sa, served, err := st.Gateway.ChatStream(rctx, call)
	if !s.opened(ctx, l, call, served, err, func() { stopWatch(); cancel() }) {
		return
	}
	ctx.SetContentType("text/event-stream")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.Response.Header.Set("X-Accel-Buffering", "no")
	l.status = fasthttp.StatusOK
	// The client watch stays on while the stream is relayed: fasthttp does
	// not read the connection until the body is written.
	body := openai.NewStreamBody(sa, openai.StreamOptions{
		ID: "chatcmpl-" + l.id, Created: time.Now().Unix(), Model: req.Model, Format: format, IncludeUsage: req.IncludeUsage,
		Cancel: func() { stopWatch(); cancel() },
		OnDone: s.answerDone(l, call),
		Log:    s.log,
	})
	setHeldBody(ctx, st, body, -1, hold)
}

// chatForward answers a non-stream request as its answer arrives: the
// status and headers once the answer is committed (its first image under
// way), the body as the upstream sends it. The call is closed, and the
// request logged, when the body is out or broke.
func (s *Server) chatForward(ctx *fasthttp.RequestCtx, st *State, l *reqLog, call *gateway.Call, format openai.Format,
	rctx context.Context, cancel context.CancelFunc, stopWatch func(), hold *inflight.Hold) {
	fa, served, err := st.Gateway.ChatForward(rctx, call)
	if !s.opened(ctx, l, call, served, err, func() { stopWatch(); cancel() }) {
		return
	}
	if fa.Whole != nil {
		stopWatch()
		cancel()
		l.closeCall(call)
		s.chatAnswer(ctx, st, l, fa.Whole, format, hold)
		return
	}
	// The client watch stays on while the answer is relayed, as for a
	// stream.
	body := openai.NewForwardBody(fa, openai.ForwardOptions{
		ReqID: l.id, Model: call.Req.Model, Format: format,
		Cancel: func() { stopWatch(); cancel() },
		OnDone: s.answerDone(l, call),
		Log:    s.log,
	})
	s.sendForward(ctx, st, l, call, served, body, hold)
}

// sendForward sets a forwarded answer as the response: with its length
// when it was whole within prefetchBytes, as it arrives otherwise, or the
// error that broke it before anything went out.
func (s *Server) sendForward(ctx *fasthttp.RequestCtx, st *State, l *reqLog, call *gateway.Call, served router.Served,
	body *openai.ForwardBody, hold *inflight.Hold) {
	whole, err := body.Prefetch(prefetchBytes)
	if err != nil {
		// Broken before its first byte went out: an error status still can.
		e := s.journeyError(err, call)
		triedMessage(e, served.Tried)
		writeError(ctx, e)
		l.status, l.errCode = e.Status, e.Code
		body.Abort(err)
		return
	}
	ctx.SetContentType("application/json")
	l.status = fasthttp.StatusOK
	if whole {
		setHeldBody(ctx, st, body, body.Len(), hold)
		return
	}
	setHeldBody(ctx, st, body, -1, hold)
}

// prefetchBytes is how much of a forwarded answer is rendered before its
// status goes out: an answer that ends within it (no image, or a small one)
// goes with a Content-Length, as it did when every answer was read whole.
const prefetchBytes = 32 << 10

// opened sets the headers of an answer that is relayed as it arrives and
// reports whether it opened; when it did not, the call is closed and the
// client answered with err (stop ends the upstream call and the client
// watch).
func (s *Server) opened(ctx *fasthttp.RequestCtx, l *reqLog, call *gateway.Call, served router.Served, err error, stop func()) bool {
	l.served = served
	setCallHeaders(ctx, call)
	if err != nil {
		stop()
		l.closeCall(call)
		e := s.journeyError(err, call)
		triedMessage(e, served.Tried)
		setLastTried(ctx, served)
		l.err = err
		s.fail(ctx, l, e)
		return false
	}
	ctx.Response.Header.Set("x-nanogate-provider", served.Provider)
	return true
}

// answerDone is what runs when a relayed answer is over: the call is
// closed (which bills it) and the request logged.
func (s *Server) answerDone(l *reqLog, call *gateway.Call) func(openai.StreamSummary) {
	return func(sum openai.StreamSummary) {
		l.usage, l.finish, l.err = sum.Usage, sum.FinishReason, sum.Err
		if sum.ClientGone {
			l.gone = true
		}
		l.closeCall(call)
		s.logRequest(l)
	}
}

// jsonContentType admits JSON and the types plain tools send JSON with (curl
// -d says application/x-www-form-urlencoded); multipart and the rest are
// refused before the body is parsed.
func jsonContentType(ct []byte) bool {
	if len(ct) == 0 {
		return true
	}
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = bytes.TrimSpace(ct)
	for _, ok := range [...]string{"application/json", "text/plain", "application/x-www-form-urlencoded"} {
		if bytes.EqualFold(ct, []byte(ok)) {
			return true
		}
	}
	return false
}
