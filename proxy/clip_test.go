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

// An unknown model of a megabyte is quoted in the answer and the request log
// clipped to clip.Max bytes: three such requests once added 94 MB to the log.
func TestHugeUnknownModelIsClippedInAnswerAndLog(t *testing.T) {
	var logs syncBuf
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), &logs, zap.DebugLevel))
	_, base := startServerWithLog(t, log)
	huge := strings.Repeat("m", 1<<20)
	for _, body := range []string{
		`{"model":"` + huge + `","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"` + huge + `","messages":[{"role":"user","content":"hi"}],"stream":true}`,
	} {
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testClientKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || !strings.Contains(string(answer), "model_not_found") {
			t.Fatalf("status %d: %.200s", resp.StatusCode, answer)
		}
		if len(answer) > 2*clip.Max+200 {
			t.Errorf("the answer is %d bytes", len(answer))
		}
		if !strings.Contains(string(answer), strings.Repeat("m", 100)+"...") {
			t.Errorf("the answer does not quote the clipped model: %.400s", answer)
		}
	}
	if n := logs.Len(); n > 4*clip.Max+2000 {
		t.Errorf("two requests wrote %d bytes of logs", n)
	}
	if !strings.Contains(logs.String(), `"model":"mmm`) {
		t.Errorf("the request log lacks the clipped model:\n%.600s", logs.String())
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
