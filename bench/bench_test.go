package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"nanogate/auth"
	"nanogate/bench/load"
	"nanogate/config"
	"nanogate/gateway"
	"nanogate/internal/fakeup"
	"nanogate/openai"
	"nanogate/provider"
	"nanogate/ratelimit"
)

// The per-request path, piece by piece, then whole. Each benchmark names what
// it covers; B/op and allocs/op are the process's, so the upstreams they
// talk to answer canned bytes without allocating (helpers_test.go).

// BenchmarkAuthLookup: one key presented among 100 configured (sha256 of the
// secret, then a map lookup).
func BenchmarkAuthLookup(b *testing.B) {
	keys := make([]config.Key, 100)
	for i := range keys {
		keys[i] = config.Key{Name: fmt.Sprint("key", i), Team: "bench", Key: fmt.Sprintf("sk-nanogate-%040d", i)}
	}
	t := auth.NewTable(keys)
	secret := []byte(keys[57].Key)
	b.ReportAllocs()
	for b.Loop() {
		if t.Lookup(secret) == nil {
			b.Fatal("key not found")
		}
	}
}

var limiterRequest = ratelimit.Request{Key: "bench", Team: "bench", Tokens: 1546,
	Limits: ratelimit.Limits{KeyRPM: 1e9, KeyTPM: 1e15, TeamRPM: 1e9, TeamTPM: 1e15}}

// BenchmarkLimiterMemory: one decision over the four limits of a key in a
// team, embedded (no Redis).
func BenchmarkLimiterMemory(b *testing.B) {
	l := ratelimit.NewMemory()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if r, err := l.Allow(ctx, limiterRequest); err != nil || !r.Allowed {
			b.Fatal(r, err)
		}
	}
}

// BenchmarkLimiterMemoryParallel: the same from every P at once, on one key.
func BenchmarkLimiterMemoryParallel(b *testing.B) {
	l := ratelimit.NewMemory()
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Allow(ctx, limiterRequest)
		}
	})
}

// dataURLBody is a chat request carrying a 1.5 MB PNG as a data URL.
func dataURLBody() []byte {
	return []byte(`{"model":"` + largeModel + `","messages":[{"role":"user","content":[` +
		`{"type":"text","text":"put a nano banana on this plate"},` +
		`{"type":"image_url","image_url":{"url":"data:image/png;base64,` + fakeup.PNGBase64(largeImage) + `"}}]}]}`)
}

// BenchmarkParseChatRequest: parse and validate the client's body (small,
// and with a 1.5 MB input image whose base64 is checked, not decoded).
func BenchmarkParseChatRequest(b *testing.B) {
	for _, c := range []struct {
		name string
		body []byte
	}{{"small", []byte(smallBody)}, {"image1.5MB", dataURLBody()}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := openai.ParseChatRequest(c.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func mustParse(tb testing.TB, body string) *provider.ChatRequest {
	tb.Helper()
	r, err := openai.ParseChatRequest([]byte(body))
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// BenchmarkUpstreamLoopbackFloor is one round trip to a canned upstream with
// the harness's minimal client: the floor under the two provider benchmarks
// that follow.
func BenchmarkUpstreamLoopbackFloor(b *testing.B) {
	for _, name := range []string{"openai", "gemini"} {
		b.Run(name, func(b *testing.B) {
			c := startCanned(b, name)
			req, _ := load.NewPost("http://"+c.addr()+"/v1/chat/completions", []byte(smallBody))
			conn, err := load.Dial(c.addr())
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			b.ReportAllocs()
			for b.Loop() {
				if st, _, err := conn.Do(req.Raw, nil); err != nil || st != 200 {
					b.Fatal(st, err)
				}
			}
		})
	}
}

// BenchmarkProviderChat: a provider's whole non-stream call over loopback to
// a canned upstream: build the upstream request, write it, read the answer,
// parse it without decoding the image (openai: a 2 KB markdown data URL;
// gemini: 1.5 MB inlineData, translated). Minus the floor above, this is the
// provider's own cost.
func BenchmarkProviderChat(b *testing.B) {
	for _, c := range []struct {
		name, kind, model, body string
	}{{"openai2KB", "openai", smallModel, smallBody}, {"gemini1.5MB", "gemini", largeModel, largeBody}} {
		b.Run(c.name, func(b *testing.B) {
			up := startCanned(b, c.kind)
			pc := config.Provider{Name: c.kind, Kind: config.ProviderKind(c.kind), APIKey: upstreamKey, Timeout: time.Minute, MaxConns: 4,
				BaseURL: "http://" + up.addr() + "/v1", Models: map[string]string{c.model: c.model}}
			if pc.Kind == config.KindGemini {
				pc.BaseURL = "http://" + up.addr() + "/v1beta"
			}
			p, err := provider.New(pc, provider.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			req := mustParse(b, c.body)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				res, err := p.Chat(ctx, req, c.model)
				if err != nil {
					b.Fatal(err)
				}
				if res.Images() != 1 {
					b.Fatalf("%d images", res.Images())
				}
				res.Release()
			}
		})
	}
}

// answer is a parsed upstream answer with one image of size bytes.
func answer(size int) *gateway.Answer {
	res := &provider.Result{ID: "chatcmpl-bench", Created: 1764000000, Choices: []provider.Choice{{
		Text:         []byte(fakeup.Text),
		Images:       []provider.Image{{MIME: "image/png", B64: []byte(fakeup.PNGBase64(size))}},
		FinishReason: "stop",
	}}, Usage: provider.Usage{Reported: true, PromptTokens: 17, TextTokens: 14}}
	return &gateway.Answer{Result: res, Usage: gateway.Usage{PromptTokens: 17, TextTokens: 14, Images: 1,
		ImageTokens: 1290, CompletionTokens: 1304, TotalTokens: 1321}}
}

// BenchmarkChatBody: render a parsed answer as a chat.completion (markdown
// image) and write it to io.Discard, the image straight from its buffer.
func BenchmarkChatBody(b *testing.B) {
	for _, c := range []struct {
		name string
		size int
	}{{"2KB", smallImage}, {"1.5MB", largeImage}} {
		b.Run(c.name, func(b *testing.B) {
			a := answer(c.size)
			n := openai.NewChatBody(a, "bench", smallModel, openai.FormatMarkdown).Len()
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				body := openai.NewChatBody(a, "bench", smallModel, openai.FormatMarkdown)
				if _, err := body.WriteTo(io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// handlerRequest is a client's POST to the gateway.
func handlerRequest(body string) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("/v1/chat/completions")
	req.Header.SetHost("bench")
	req.Header.SetContentType("application/json")
	req.Header.Set("Authorization", "Bearer "+clientKey)
	req.SetBodyString(body)
	return req
}

// nullConn is a client connection that takes any write at once: the
// handler's per-write deadlines cost what they cost on a socket, without one.
type nullConn struct{}

func (nullConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (nullConn) Write(p []byte) (int, error)      { return len(p), nil }
func (nullConn) Close() error                     { return nil }
func (nullConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080} }
func (nullConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (nullConn) SetDeadline(time.Time) error      { return nil }
func (nullConn) SetReadDeadline(time.Time) error  { return nil }
func (nullConn) SetWriteDeadline(time.Time) error { return nil }

// handlerCtx is a RequestCtx on a nullConn.
func handlerCtx() *fasthttp.RequestCtx {
	ctx := &fasthttp.RequestCtx{}
	ctx.Init2(nullConn{}, nil, false)
	return ctx
}

// handlerOnce runs the gateway's handler on ctx for req and writes the
// answer out, checking it is a 200.
func handlerOnce(tb testing.TB, h fasthttp.RequestHandler, ctx *fasthttp.RequestCtx, req *fasthttp.Request, bw *bufio.Writer) {
	req.CopyTo(&ctx.Request)
	h(ctx)
	if st := ctx.Response.StatusCode(); st != 200 {
		tb.Fatalf("status %d: %s", st, ctx.Response.Body())
	}
	if err := ctx.Response.Write(bw); err != nil {
		tb.Fatal(err)
	}
	bw.Flush()
	ctx.Response.Reset()
}

// BenchmarkHandler: the whole request in-process on a RequestCtx (no
// socket between client and gateway, so no client-disconnect watch): auth,
// parse, limiter and budget (embedded), the upstream call over loopback to a
// canned answer, rendering, the log line (JSON-encoded, written nowhere),
// metrics and the usage record.
func BenchmarkHandler(b *testing.B) {
	for _, c := range []struct{ name, body string }{{"small", smallBody}, {"gemini1.5MB", largeBody}} {
		b.Run(c.name, func(b *testing.B) {
			e := newEnv(b)
			h := e.srv.Handler()
			req := handlerRequest(c.body)
			defer fasthttp.ReleaseRequest(req)
			ctx := handlerCtx()
			bw := bufio.NewWriterSize(io.Discard, 64<<10)
			handlerOnce(b, h, ctx, req, bw) // dials the upstream
			b.ReportAllocs()
			for b.Loop() {
				handlerOnce(b, h, ctx, req, bw)
			}
		})
	}
}

// BenchmarkServerInmemory: the same through the fasthttp server, over
// fasthttputil's in-memory listener (a pipe, not a socket: the
// client-disconnect watch still does not run) with fasthttp's client.
func BenchmarkServerInmemory(b *testing.B) {
	e := newEnv(b)
	ln := fasthttputil.NewInmemoryListener()
	go e.srv.Serve(ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.srv.Shutdown(ctx)
	}()
	c := &fasthttp.HostClient{Addr: "bench", MaxConns: 1, Dial: func(string) (net.Conn, error) { return ln.Dial() }}
	req := handlerRequest(smallBody)
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	do := func() {
		if err := c.Do(req, resp); err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode() != 200 || !bytes.Contains(resp.Body(), []byte(`"image_tokens":1290`)) {
			b.Fatalf("status %d: %.300s", resp.StatusCode(), resp.Body())
		}
	}
	do()
	b.ReportAllocs()
	for b.Loop() {
		do()
	}
}

// TestBenchmarksAnswer runs each in-process path once, so that `make test`
// notices when a change breaks the benchmarks' set-up.
func TestBenchmarksAnswer(t *testing.T) {
	e := newEnv(t)
	h := e.srv.Handler()
	for _, body := range []string{smallBody, largeBody} {
		req := handlerRequest(body)
		ctx := handlerCtx()
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		handlerOnce(t, h, ctx, req, bw)
		if !bytes.Contains(out.Bytes(), []byte(`"image_tokens":1290`)) {
			t.Fatalf("answer without image tokens: %.300s", out.Bytes())
		}
		fasthttp.ReleaseRequest(req)
	}
}
