package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"nanogate/internal/clip"
)

// A model id of a megabyte is refused without being quoted, in the answer
// or the request log (three such requests once added 94 MB to the log); an
// unknown model within the bound is quoted in full.
func TestHugeUnknownModelIsNotEchoed(t *testing.T) {
	var logs syncBuf
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), &logs, zap.DebugLevel))
	_, base := startServerWithLog(t, log)
	huge := strings.Repeat("m", 1<<20)
	long := strings.Repeat("n", 256)
	for _, tc := range []struct {
		body   string
		status int
		quote  string
	}{
		{`{"model":"` + huge + `","messages":[{"role":"user","content":"hi"}]}`, 400, ""},
		{`{"model":"` + huge + `","messages":[{"role":"user","content":"hi"}],"stream":true}`, 400, ""},
		{`{"model":"` + long + `","messages":[{"role":"user","content":"hi"}]}`, 404, long},
	} {
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+testClientKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("status %d, want %d: %.200s", resp.StatusCode, tc.status, answer)
		}
		if len(answer) > 2*clip.Max+200 {
			t.Errorf("the answer is %d bytes", len(answer))
		}
		if tc.quote != "" && !strings.Contains(string(answer), tc.quote) {
			t.Errorf("the answer does not quote the model: %.400s", answer)
		}
	}
	if n := logs.Len(); n > 6*clip.Max+3000 {
		t.Errorf("three requests wrote %d bytes of logs", n)
	}
}

// Values that reach an error unclipped (a parser's message quoting a field)
// are bounded where every error is written.
func TestWriteErrorBoundsMessageAndParam(t *testing.T) {
	huge := strings.Repeat("p", 1<<20)
	e := &apiError{Status: 400, Type: "invalid_request_error", Code: "invalid_request", Param: huge,
		Message: "Unrecognized request argument supplied: " + huge}
	var ctx fasthttp.RequestCtx
	writeError(&ctx, e)
	body := ctx.Response.Body()
	if len(body) > maxMessage+clip.Max+200 || ctx.Response.StatusCode() != 400 {
		t.Fatalf("status %d, %d bytes", ctx.Response.StatusCode(), len(body))
	}
	if !strings.Contains(string(body), "Unrecognized request argument supplied: ppp") {
		t.Fatalf("%.200s", body)
	}
	if e.Param != huge {
		t.Fatal("writeError changed a shared error")
	}
}
