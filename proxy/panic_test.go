package proxy

import (
	"bytes"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"nanogate/auth"
	"nanogate/config"
	"nanogate/metrics"
)

type syncBuf struct{ bytes.Buffer }

func (b *syncBuf) Sync() error { return nil }

// TestPanicBecomes500: a handler that panics (here: a state without a
// gateway) answers 500 in the envelope with the request id, logs once, and is
// counted.
func TestPanicBecomes500(t *testing.T) {
	var logs syncBuf
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), &logs, zap.DebugLevel))
	m := metrics.New()
	cfg := &config.Config{}
	cfg.Defaults()
	st := &State{Config: cfg, Keys: auth.NewTable([]config.Key{{Name: "k", Key: "secret-key-123"}})}
	s := New(st, log, m)
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/v1/chat/completions")
	ctx.Request.Header.Set("Authorization", "Bearer secret-key-123")
	ctx.Request.Header.Set("x-request-id", "trace-7")
	ctx.Request.SetBodyString(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	s.Handler()(&ctx)
	if ctx.Response.StatusCode() != 500 {
		t.Fatalf("status %d", ctx.Response.StatusCode())
	}
	body := string(ctx.Response.Body())
	if !strings.Contains(body, `"code":"internal_error"`) || !strings.Contains(body, "trace-7") {
		t.Fatalf("body %s", body)
	}
	if string(ctx.Response.Header.Peek("x-request-id")) != "trace-7" {
		t.Fatal("no request id on the 500")
	}
	if n := strings.Count(logs.String(), "handler panic"); n != 1 {
		t.Fatalf("panic logged %d times", n)
	}
	if strings.Contains(logs.String(), "secret-key-123") {
		t.Fatal("the key was logged")
	}
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counted := false
	for _, f := range fams {
		if f.GetName() == "nanogate_panics_total" && f.GetMetric()[0].GetCounter().GetValue() == 1 {
			counted = true
		}
	}
	if !counted {
		t.Fatal("panic not counted")
	}
}
