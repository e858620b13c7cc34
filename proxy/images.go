package proxy

import (
	"context"
	"time"

	"github.com/valyala/fasthttp"

	"nanogate/auth"
	"nanogate/gateway"
	"nanogate/internal/inflight"
	"nanogate/internal/reqid"
	"nanogate/internal/safemath"
	"nanogate/openai"
)

// handleImages serves /v1/images/generations and /v1/images/edits through
// the same limits, routing and accounting as chat.
func (s *Server) handleImages(ctx *fasthttp.RequestCtx, st *State, rid string, caller *auth.Caller, edits bool) {
	l := &reqLog{start: time.Now(), id: rid, known: st.Gateway.Router(), route: "images", caller: caller,
		ip: s.clientAddr(ctx)}
	var ir *openai.ImagesRequest
	var aerr *apiError
	if edits {
		l.route = "images_edits"
		ir, aerr = openai.ParseImagesEdit(string(ctx.Request.Header.ContentType()), ctx.PostBody())
	} else if !jsonContentType(ctx.Request.Header.ContentType()) {
		aerr = errContentType
	} else {
		var err error
		if ir, err = openai.ParseImagesGeneration(ctx.PostBody()); err != nil {
			aerr = toAPIError(err, "")
		}
	}
	if aerr == nil {
		if err := ir.Finish(st.Gateway.DefaultImageModel(st.Config.ModelsInOrder())); err != nil {
			aerr = toAPIError(err, "")
		}
	}
	if aerr != nil {
		s.fail(ctx, l, aerr)
		return
	}
	l.model = ir.Model
	req, err := ir.ChatRequest(st.Gateway.Model(ir.Model))
	if err != nil {
		s.fail(ctx, l, toAPIError(err, ir.Model))
		return
	}
	call := &gateway.Call{ID: s.ids.next(), Caller: caller, Req: req}
	call.SetLinks(ir.Links)
	// One image is forwarded as it arrives; n make n calls of one image
	// each, whose answers are held until the last is in.
	forward := ir.N <= 1 && st.Gateway.Forwards(call)
	answer := safemath.Mul(int64(max(ir.N, 1)), st.Gateway.AnswerBytes(req))
	if forward {
		answer = st.Gateway.ForwardedBytes(call)
	}
	hold, e := s.holdBytes(safemath.Add(int64(len(ctx.PostBody())), answer))
	if e != nil {
		s.fail(ctx, l, e)
		return
	}
	defer hold.Release()
	rctx, cancel := context.WithCancel(reqid.With(context.Background(), rid))
	rctx = s.startSpan(ctx, rctx, l, "images")
	stopWatch := s.clients.watchClient(ctx.Conn(), func() { l.gone = true; cancel() })
	if forward {
		s.imagesForward(ctx, st, l, call, ir.Links, rctx, cancel, stopWatch, hold)
		return
	}
	ans, err := st.Gateway.Images(rctx, call, ir.N, ir.Links)
	stopWatch()
	cancel()
	setCallHeaders(ctx, call)
	l.closeCall(call)
	if err != nil {
		if p := call.LastTried(); p != "" {
			ctx.Response.Header.Set("x-nanogate-provider", p)
		}
		l.err = err
		s.fail(ctx, l, s.journeyError(err, call))
		return
	}
	if len(ans.Served) > 0 {
		l.served = ans.Served[0]
		l.served.Attempts = 0
		for _, sv := range ans.Served {
			l.served.Attempts += sv.Attempts
		}
	}
	s.imagesAnswer(ctx, st, l, ans, hold)
}

// imagesAnswer writes a whole Images API answer (its call closed) and logs
// it.
func (s *Server) imagesAnswer(ctx *fasthttp.RequestCtx, st *State, l *reqLog, ans *gateway.ImagesAnswer, hold *inflight.Hold) {
	ctx.Response.Header.Set("x-nanogate-provider", ans.Provider())
	ctx.SetContentType("application/json")
	// The images go from the upstream buffers to the socket: the body
	// releases them once written.
	b := openai.NewImagesBody(ans.Images, ans.Usage, ans.PromptImageTokens(), ans.Release)
	setHeldBody(ctx, st, b, b.Len(), hold)
	l.status, l.usage = fasthttp.StatusOK, ans.Usage
	s.logRequest(l)
}

// imagesForward answers an Images API request for one image as its answer
// arrives, as chatForward does for chat.
func (s *Server) imagesForward(ctx *fasthttp.RequestCtx, st *State, l *reqLog, call *gateway.Call, links bool,
	rctx context.Context, cancel context.CancelFunc, stopWatch func(), hold *inflight.Hold) {
	fa, served, err := st.Gateway.ImagesForward(rctx, call, links)
	if !s.opened(ctx, l, call, served, err, func() { stopWatch(); cancel() }) {
		return
	}
	if fa.Whole != nil {
		stopWatch()
		cancel()
		l.closeCall(call)
		ans, err := gateway.ImagesOf(fa.Whole)
		if err != nil {
			l.err = err
			s.fail(ctx, l, s.journeyError(err, call))
			return
		}
		s.imagesAnswer(ctx, st, l, ans, hold)
		return
	}
	body := openai.NewForwardBody(fa, openai.ForwardOptions{ImagesAPI: true,
		Cancel: func() { stopWatch(); cancel() },
		OnDone: s.answerDone(l, call),
		Log:    s.log,
	})
	s.sendForward(ctx, st, l, call, served, body, hold)
}
