package fakeup

import (
	"bytes"
	"encoding/base64"
	"image"
	_ "image/png" // DecodeConfig of the images the servers send
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"nanogate/internal/poll"
)

const testKey = "sk-test-key"

// testClient bounds every exchange, so a server that never ends an answer fails the test instead of hanging it.
var testClient = &http.Client{Timeout: 20 * time.Second}

func startT(t *testing.T, o Options) *Server {
	t.Helper()
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

type answer struct {
	status int
	header http.Header
	body   []byte
	err    error // from reading the body
}

// do sends one request and reads the whole answer; transport errors fail the test.
func do(t *testing.T, method, url, body string, header map[string]string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, rerr := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b, rerr}
}

func bearer(k string) map[string]string  { return map[string]string{"Authorization": "Bearer " + k} }
func googKey(k string) map[string]string { return map[string]string{"x-goog-api-key": k} }

const chatBody = `{"model":"gemini-2.5-flash-image-preview","messages":[{"role":"user","content":"draw a banana"}]}`
const chatStreamBody = `{"model":"gemini-2.5-flash-image-preview","stream":true,"messages":[{"role":"user","content":"draw"}]}`
const chatStreamUsageBody = `{"model":"gemini-2.5-flash-image-preview","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"draw"}]}`

func chatURL(s *Server) string { return s.URL() + "/chat/completions" }
func genURL(s *Server) string  { return s.URL() + "/models/gemini-2.5-flash-image:generateContent" }
func streamURL(s *Server) string {
	return s.URL() + "/models/gemini-2.5-flash-image:streamGenerateContent?alt=sse"
}

var genBody = string(Fixture("gemini/request_text_to_image.json"))

// checkPNG decodes a base64 image, checks it is a PNG of about size bytes (exactly, for generated sizes) and
// returns the bytes.
func checkPNG(t *testing.T, b64 string, size int) []byte {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("image is not base64: %v", err)
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(raw))
	if err != nil || format != "png" || cfg.Width < 1 || cfg.Height < 1 {
		t.Fatalf("image is not a PNG: %v %q %+v", err, format, cfg)
	}
	// 0 is the default: tiny.png for the first image, the smallest generated PNG (a few bytes more) after it.
	if size == 0 && (len(raw) < 72 || len(raw) > 100) || size > 0 && len(raw) != size {
		t.Fatalf("image has %d bytes, want %d", len(raw), size)
	}
	return raw
}

// sseEvents splits a body into events at sep and strips "data: ".
func sseEvents(t *testing.T, body []byte, sep string) []string {
	t.Helper()
	s := string(body)
	if !strings.HasSuffix(s, sep) {
		t.Fatalf("stream does not end with %q: ...%q", sep, tail(s))
	}
	parts := strings.Split(strings.TrimSuffix(s, sep), sep)
	for i, p := range parts {
		d, ok := strings.CutPrefix(p, "data: ")
		if !ok || strings.Contains(d, "\n") {
			t.Fatalf("event %d is not one data line: %q", i, clipS(p))
		}
		parts[i] = d
	}
	return parts
}

func tail(s string) string {
	if len(s) > 80 {
		return s[len(s)-80:]
	}
	return s
}

func clipS(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, cond)
}
