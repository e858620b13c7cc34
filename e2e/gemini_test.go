package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"nanogate/internal/fakeup"
	"nanogate/internal/gwtest"
)

const (
	googleKey   = "AIzaSyE2E-google-key-0123456789abcdef"
	resellerKey = "up-secret-reseller-CCCC3333"
)

// gemEnv is a gateway in front of fakeup's Google (the cheaper provider, tried
// first) and a fakeup reseller to fail over to.
type gemEnv struct {
	*env
	google, reseller *fakeup.Server
}

func startGeminiEnv(t *testing.T, configuredKey string) *gemEnv {
	t.Helper()
	google := startFake(t, fakeup.Options{Kind: fakeup.Gemini, Key: googleKey})
	reseller := startFake(t, fakeup.Options{Kind: fakeup.OpenAI, Key: resellerKey})
	cfg := fmt.Sprintf(`
server:
  listen: "{{ADDR}}"
  max_body_bytes: 16777216
  shutdown_timeout: 10s
log: { level: info, format: json }
providers:
  - name: google
    kind: gemini
    base_url: %s
    api_key: ${GOOGLE_KEY}
    models: { %s: gemini-2.5-flash-image }
    prices: { %[2]s: { per_image: 0.030, input_per_mtok: 0.30, output_per_mtok: 2.50 } }
    timeout: 10s
  - name: reseller
    kind: openai
    base_url: %s
    api_key: ${RESELLER_KEY}
    models: { %s: upstream-model-b }
    price: { per_image: 0.039, input_per_mtok: 0.30, output_per_mtok: 2.50 }
    timeout: 10s
routing:
  max_attempts: 3
  health: { failure_threshold: 100, cooldown: 30s }
images: { format: markdown }
teams:
  - name: design
keys:
  - name: ci
    team: design
    key: ${CLIENT_KEY}
`, google.URL(), model, reseller.URL(), model)
	gw := gwtest.Start(t, cfg, "GOOGLE_KEY="+configuredKey, "RESELLER_KEY="+resellerKey, "CLIENT_KEY="+clientKey)
	return &gemEnv{env: &env{gw: gw}, google: google, reseller: reseller}
}

// imageURLPart is an image_url content part with a data URL.
func imageURLPart(b64 string) string {
	return `{"type":"image_url","image_url":{"url":"data:image/png;base64,` + b64 + `"}}`
}

func TestGeminiInputImagesReachGoogleIntactAndInOrder(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	const size = 300 << 10
	body := `{"model":"` + model + `","messages":[{"role":"system","content":"Keep the lighting."},{"role":"user","content":[` +
		`{"type":"text","text":"Put the cat from the first image on the sofa from the second."},` +
		imageURLPart(fakeup.NthPNGBase64(size, 0)) + `,` + imageURLPart(fakeup.NthPNGBase64(size, 1)) + `]}]}`
	resp := e.post(t, body)
	out := readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "google" {
		t.Fatalf("status %d provider %q: %.300s", resp.StatusCode, resp.Header.Get("x-nanogate-provider"), out)
	}
	sent, err := fakeup.ParseGeminiRequest(e.google.LastBody())
	if err != nil {
		t.Fatal(err)
	}
	if sent.SystemInstruction == nil || sent.SystemInstruction.Parts[0].Text != "Keep the lighting." {
		t.Errorf("system instruction %+v", sent.SystemInstruction)
	}
	if len(sent.Contents) != 1 || sent.Contents[0].Role != "user" {
		t.Fatalf("contents %+v", sent.Contents)
	}
	parts := sent.Contents[0].Parts
	if len(parts) != 3 || !strings.HasPrefix(parts[0].Text, "Put the cat") {
		t.Fatalf("parts: want the text then two images, got %d parts", len(parts))
	}
	for i := 0; i < 2; i++ {
		if parts[i+1].MimeType != "image/png" {
			t.Errorf("image %d: mimeType %q", i, parts[i+1].MimeType)
		}
		sameBytes(t, parts[i+1].Data, fakeup.NthPNG(size, i))
	}
	if len(sent.ResponseModalities) != 2 || sent.ResponseModalities[0] != "TEXT" || sent.ResponseModalities[1] != "IMAGE" {
		t.Errorf("responseModalities %v", sent.ResponseModalities)
	}
	if e.google.LastAuth() != googleKey {
		t.Errorf("x-goog-api-key = %q", e.google.LastAuth())
	}
}

func TestGeminiReturnsImageWithBilledUsage(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	e.google.SetImageSize(1500 << 10)
	resp := e.post(t, chatBody(`,"image_config":{"aspect_ratio":"16:9"},"max_tokens":1290`))
	body := readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "google" {
		t.Fatalf("status %d provider %q: %.300s", resp.StatusCode, resp.Header.Get("x-nanogate-provider"), body)
	}
	var c completion
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Choices) != 1 || c.Choices[0].FinishReason != "stop" || c.Model != model {
		t.Fatalf("completion %.300s", body)
	}
	content := c.Choices[0].Message.Content
	if !strings.HasPrefix(content, fakeup.Text+"\n\n![image](") {
		t.Errorf("content does not start with the text then the image: %.100q", content)
	}
	m := mdImage.FindStringSubmatch(content)
	if m == nil {
		t.Fatalf("no markdown image in %.200q", content)
	}
	sameBytes(t, decodeDataURL(t, "data:"+m[1]+";base64,"+m[2]), fakeup.PNG(1500<<10))
	u := c.Usage
	if u.CompletionTokensDetails.ImageTokens != 1290 || u.CompletionTokens != 1290+14 || u.PromptTokens != 17 || u.TotalTokens != 17+1304 {
		t.Errorf("usage %+v", u)
	}
	// The request carried the aspect ratio and the max_tokens rule.
	sent, err := fakeup.ParseGeminiRequest(e.google.LastBody())
	if err != nil {
		t.Fatal(err)
	}
	if sent.AspectRatio != "16:9" || !strings.Contains(string(e.google.LastBody()), `"maxOutputTokens":2580`) {
		t.Errorf("aspect ratio %q, body %.300s", sent.AspectRatio, e.google.LastBody())
	}
}

func TestGeminiNoImageIsContentFilterAndUnbilled(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	for outcome, reason := range map[string]string{
		fakeup.OutcomeNoImage:       "(NO_IMAGE)",
		fakeup.OutcomeImageSafety:   "(IMAGE_SAFETY)",
		fakeup.OutcomePromptBlocked: "blocked (PROHIBITED_CONTENT)",
	} {
		t.Run(outcome, func(t *testing.T) {
			e.google.SetOutcome(outcome)
			resp := e.post(t, chatBody(""))
			body := readAll(t, resp)
			if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "google" {
				t.Fatalf("status %d provider %q: %s", resp.StatusCode, resp.Header.Get("x-nanogate-provider"), body)
			}
			var c completion
			if err := json.Unmarshal(body, &c); err != nil {
				t.Fatal(err)
			}
			ch := c.Choices[0]
			// A safety block is OpenAI's refusal: the reason in refusal,
			// content null.
			if ch.FinishReason != "content_filter" || ch.Message.Refusal == nil || !strings.Contains(*ch.Message.Refusal, reason) ||
				ch.Message.Content != "" || !bytes.Contains(body, []byte(`"content":null`)) {
				t.Errorf("choice %+v", ch)
			}
			if c.Usage.CompletionTokensDetails.ImageTokens != 0 || c.Usage.CompletionTokens != 0 {
				t.Errorf("usage %+v: an image that was not made was billed", c.Usage)
			}
			if e.reseller.Requests() != 0 {
				t.Errorf("a no-image answer was retried elsewhere")
			}

			// The same as a stream.
			events := sseEvents(t, e.post(t, chatBody(`,"stream":true,"stream_options":{"include_usage":true}`)))
			var text, finish string
			var u *usage
			for _, ev := range events {
				if ev == "[DONE]" {
					continue
				}
				var ck chunk
				if err := json.Unmarshal([]byte(ev), &ck); err != nil {
					t.Fatalf("chunk %s: %v", ev, err)
				}
				for _, c := range ck.Choices {
					text += c.Delta.Content + c.Delta.Refusal
					if c.FinishReason != nil {
						finish = *c.FinishReason
					}
				}
				if ck.Usage != nil {
					u = ck.Usage
				}
			}
			if finish != "content_filter" || !strings.Contains(text, reason) || u == nil || u.CompletionTokensDetails.ImageTokens != 0 {
				t.Errorf("stream: finish %q text %q usage %+v", finish, text, u)
			}
		})
	}
}

func TestGeminiFailover(t *testing.T) {
	tests := []struct {
		name  string
		fault fakeup.Fault
	}{
		{"429 with RetryInfo", fakeup.Fault{Status: 429}},
		{"429 prepay depleted", fakeup.Fault{Prepay: true}},
		{"500", fakeup.Fault{Status: 500}},
		{"503", fakeup.Fault{Status: 503}},
		{"cut mid body", fakeup.Fault{DropMidBody: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A gateway each: a 429 benches the provider for its retry time.
			e := startGeminiEnv(t, googleKey)
			f := tt.fault
			f.Times = 1
			e.google.SetFault(f)
			resp := e.post(t, chatBody(""))
			body := readAll(t, resp)
			if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "reseller" {
				t.Fatalf("status %d provider %q: %.300s", resp.StatusCode, resp.Header.Get("x-nanogate-provider"), body)
			}
			if e.google.Requests() != 1 || e.reseller.Requests() != 1 {
				t.Fatalf("requests google=%d reseller=%d", e.google.Requests(), e.reseller.Requests())
			}
			if !mdImage.Match(body) {
				t.Fatalf("no image from the second provider: %.300s", body)
			}
		})
	}
}

func TestGeminiBadKeyFailsOverWithoutBlamingTheClient(t *testing.T) {
	// Google answers a wrong key with 400 INVALID_ARGUMENT: the gateway's
	// configuration, not the client's request.
	e := startGeminiEnv(t, "AIzaSyWrong-key-00000000000000000000")
	resp := e.post(t, chatBody(""))
	body := readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "reseller" {
		t.Fatalf("status %d provider %q: %.300s", resp.StatusCode, resp.Header.Get("x-nanogate-provider"), body)
	}
	waitRequestLine(t, e.gw, resp)
	if strings.Contains(e.gw.Logs(), "AIzaSyWrong-key") {
		t.Errorf("the configured key appears in the logs")
	}
}

func TestGeminiInvalidArgumentIsNotRetried(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	e.google.SetFault(fakeup.Fault{Status: 400})
	env := expectError(t, e.post(t, chatBody("")), 400, "invalid_request")
	if !strings.Contains(env.Error.Message, "aspect_ratio") {
		t.Errorf("Google's explanation is lost: %q", env.Error.Message)
	}
	if e.reseller.Requests() != 0 {
		t.Fatalf("a 400 INVALID_ARGUMENT was retried on another provider")
	}
}

func TestGeminiStreamReturnsImage(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	const size = 1 << 20
	e.google.SetImageSize(size)
	resp := e.post(t, chatBody(`,"stream":true,"stream_options":{"include_usage":true}`))
	if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "google" {
		t.Fatalf("status %d provider %q", resp.StatusCode, resp.Header.Get("x-nanogate-provider"))
	}
	events := sseEvents(t, resp)
	if len(events) < 4 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream incomplete: %d events", len(events))
	}
	var content, finish string
	var u *usage
	for _, ev := range events[:len(events)-1] {
		var ck chunk
		if err := json.Unmarshal([]byte(ev), &ck); err != nil {
			t.Fatalf("chunk %.200s: %v", ev, err)
		}
		for _, c := range ck.Choices {
			content += c.Delta.Content
			if c.FinishReason != nil {
				finish = *c.FinishReason
			}
		}
		if ck.Usage != nil {
			u = ck.Usage
		}
	}
	if finish != "stop" || !strings.HasPrefix(content, fakeup.Text) {
		t.Fatalf("finish %q content %.100q", finish, content)
	}
	m := mdImage.FindStringSubmatch(content)
	if m == nil {
		t.Fatalf("no image in the streamed content %.200q", content)
	}
	sameBytes(t, decodeDataURL(t, "data:"+m[1]+";base64,"+m[2]), fakeup.PNG(size))
	if u == nil || u.CompletionTokensDetails.ImageTokens != 1290 || u.CompletionTokens != 1304 || u.PromptTokens != 17 {
		t.Fatalf("usage %+v", u)
	}
	if p := e.google.LastPath(); p != "/v1beta/models/gemini-2.5-flash-image:streamGenerateContent?alt=sse" {
		t.Errorf("path %q", p)
	}
}

func TestGeminiImageURLToPrivateAddressIsRefused(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	var hits atomic.Int64
	private := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer private.Close()
	for _, u := range []string{private.URL + "/cat.png", "http://169.254.169.254/latest/meta-data/", "http://2130706433/x.png"} {
		body := `{"model":"` + model + `","messages":[{"role":"user","content":[{"type":"text","text":"edit"},` +
			`{"type":"image_url","image_url":{"url":"` + u + `"}}]}]}`
		env := expectError(t, e.post(t, body), 400, "invalid_request")
		if env.Error.Param == nil || *env.Error.Param != "messages[0].content[1].image_url.url" {
			t.Errorf("%s: param %v, message %q", u, env.Error.Param, env.Error.Message)
		}
	}
	if hits.Load() != 0 || e.google.Requests() != 0 || e.reseller.Requests() != 0 {
		t.Fatalf("private server hits %d, google %d, reseller %d", hits.Load(), e.google.Requests(), e.reseller.Requests())
	}
}

// TestGeminiKeyNeverInURLOrLogs runs successes and failures, then looks for
// the key where it must not be.
func TestGeminiKeyNeverInURLOrLogs(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	readAll(t, e.post(t, chatBody("")))
	if p := e.google.LastPath(); strings.Contains(p, googleKey) || strings.Contains(p, "key=") || strings.Contains(p, "?") {
		t.Errorf("path %q carries a key or a query", p)
	}
	sseEvents(t, e.post(t, chatBody(`,"stream":true`)))
	if p := e.google.LastPath(); strings.Contains(p, googleKey) || strings.Contains(p, "key=") {
		t.Errorf("stream path %q carries a key", p)
	}
	e.google.SetFault(fakeup.Fault{Status: 400, Times: 1})
	readAll(t, e.post(t, chatBody("")))
	e.google.SetFault(fakeup.Fault{Status: 500, Times: 1})
	readAll(t, e.post(t, chatBody("")))
	e.google.SetFault(fakeup.Fault{Status: 403, Times: 1})
	readAll(t, e.post(t, chatBody("")))
	waitRequestLines(t, e.gw, 5)
	logs := e.gw.Logs()
	for _, secret := range []string{googleKey, resellerKey, clientKey} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs contain %q", secret)
		}
	}
}

// TestGeminiOverloadIsRetryable: Google's 429 RESOURCE_EXHAUSTED (RetryInfo
// retryDelay 13s) or 503 "model is overloaded", with the reseller overloaded too,
// reach the client as a retryable 429 with Google's delay, never a
// non-retryable answer.
func TestGeminiOverloadIsRetryable(t *testing.T) {
	for _, tt := range []struct {
		name   string
		fault  fakeup.Fault
		wantRA string
	}{
		{"429 RetryInfo", fakeup.Fault{Status: 429}, "13"},
		{"503 overloaded", fakeup.Fault{Status: 503}, "1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := startGeminiEnv(t, googleKey)
			e.google.SetFault(tt.fault)
			e.reseller.SetFault(fakeup.Fault{Status: 503})
			resp := e.post(t, chatBody(""))
			if v := resp.Header.Get("x-should-retry"); v != "" {
				t.Errorf("x-should-retry = %q", v)
			}
			if ra := resp.Header.Get("retry-after"); ra != tt.wantRA {
				t.Errorf("retry-after = %q, want %s", ra, tt.wantRA)
			}
			expectError(t, resp, 429, "rate_limit_exceeded")
		})
	}
}
