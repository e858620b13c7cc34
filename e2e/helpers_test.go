// Package e2e drives the real nanogate binary over HTTP against the fake
// upstreams of internal/fakeup: black-box tests of what a client sees.
package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"nanogate/internal/fakeup"
	"nanogate/internal/gwtest"
	"nanogate/internal/poll"
)

const (
	model      = "gemini-2.5-flash-image-preview"
	clientKey  = "sk-e2e-client-key-0123456789"
	otherKey   = "sk-e2e-restricted-key-98765"
	upstreamK1 = "up-secret-cheap-AAAA1111"
	upstreamK2 = "up-secret-dear-BBBB2222"
)

// env is a gateway in front of two fake resellers: cheap (tried first) and
// dear.
type env struct {
	gw          *gwtest.Gateway
	cheap, dear *fakeup.Server
}

type opts struct {
	maxBody     int
	timeout     string
	maxAttempts int
	format      string
	threshold   int    // failures that open a circuit (default 100: off for most tests)
	cooldown    string // default 30s
	strategy    string
	adminKey    string
	adminListen string // server.admin_listen, empty for none
	budget      string // YAML of the design team's budget, e.g. "{ usd: 0.1, period: monthly }"
	extra       string // more top-level YAML (a redis block)
	dir         string // the gateway's working directory (default: a new temp dir)
	keyLimits   string // YAML lines added to key ci, e.g. "    rpm: 3\n"
	teamLimits  string // YAML lines added to team design
}

func startEnv(t *testing.T, o opts) *env {
	t.Helper()
	cheap := startFake(t, fakeup.Options{Kind: fakeup.OpenAI, Key: upstreamK1})
	dear := startFake(t, fakeup.Options{Kind: fakeup.OpenAI, Key: upstreamK2})
	if o.maxBody == 0 {
		o.maxBody = 1 << 20
	}
	if o.timeout == "" {
		o.timeout = "10s"
	}
	if o.maxAttempts == 0 {
		o.maxAttempts = 3
	}
	if o.format == "" {
		o.format = "markdown"
	}
	if o.threshold == 0 {
		o.threshold = 100
	}
	if o.cooldown == "" {
		o.cooldown = "30s"
	}
	if o.strategy == "" {
		o.strategy = "cheapest"
	}
	cfg := fmt.Sprintf(`
server:
  listen: "{{ADDR}}"
  admin_listen: "%s"
  max_body_bytes: %d
  shutdown_timeout: 10s
log: { level: info, format: json }
providers:
  - name: cheap
    kind: openai
    base_url: %s
    api_key: ${CHEAP_KEY}
    models: { %s: upstream-model-a }
    price: { per_image: 0.035, input_per_mtok: 0.30, output_per_mtok: 2.50 }
    timeout: %s
  - name: dear
    kind: openai
    base_url: %s
    api_key: ${DEAR_KEY}
    models: { %s: upstream-model-b, other-model: upstream-model-c }
    price: { per_image: 0.039, input_per_mtok: 0.30, output_per_mtok: 2.50 }
    timeout: %s
routing:
  max_attempts: %d
  strategy: %s
  health: { failure_threshold: %d, cooldown: %s }
images: { format: %s }
admin_key: "%s"
%s
teams:
  - name: design
%s
%s
keys:
  - name: ci
    team: design
    key: ${CLIENT_KEY}
%s
  - name: restricted
    team: design
    key: ${OTHER_KEY}
    models: [other-model]
`, o.adminListen, o.maxBody, cheap.URL(), model, o.timeout, dear.URL(), model, o.timeout, o.maxAttempts, o.strategy, o.threshold, o.cooldown, o.format, o.adminKey, o.extra, budgetLine(o.budget), o.teamLimits, o.keyLimits)
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	gw := gwtest.StartIn(t, o.dir, cfg, "CHEAP_KEY="+upstreamK1, "DEAR_KEY="+upstreamK2, "CLIENT_KEY="+clientKey, "OTHER_KEY="+otherKey)
	return &env{gw: gw, cheap: cheap, dear: dear}
}

func budgetLine(b string) string {
	if b == "" {
		return ""
	}
	return "    budget: " + b
}

var client = &http.Client{Timeout: 60 * time.Second}

// post sends a chat request with the client key.
func (e *env) post(t *testing.T, body string, headers ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest("POST", e.gw.URL+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+clientKey)
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func chatBody(extra string) string {
	return `{"model":"` + model + `","messages":[{"role":"user","content":"draw a nano banana"}]` + extra + `}`
}

// completion is the part of chat.completion the tests read.
type completion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Message struct {
			Role    string  `json:"role"`
			Content string  `json:"content"`
			Refusal *string `json:"refusal"`
			Images  []struct {
				Type     string `json:"type"`
				ImageURL struct {
					URL string `json:"url"`
				} `json:"image_url"`
			} `json:"images"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage usage `json:"usage"`
}

type usage struct {
	PromptTokens            int `json:"prompt_tokens"`
	CompletionTokens        int `json:"completion_tokens"`
	TotalTokens             int `json:"total_tokens"`
	CompletionTokensDetails struct {
		ImageTokens int `json:"image_tokens"`
	} `json:"completion_tokens_details"`
}

type envelope struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// expectError checks status and OpenAI's envelope with code.
func expectError(t *testing.T, resp *http.Response, status int, code string) envelope {
	t.Helper()
	body := readAll(t, resp)
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type = %q", ct)
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, body)
	}
	if env.Error.Code == nil || *env.Error.Code != code || env.Error.Message == "" || env.Error.Type == "" {
		t.Fatalf("envelope = %s, want code %q", body, code)
	}
	if resp.Header.Get("x-request-id") == "" {
		t.Fatalf("no x-request-id on an error answer")
	}
	return env
}

var mdImage = regexp.MustCompile(`!\[image\]\(data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)\)`)

// decodeDataURL returns the bytes of a data:image URL.
func decodeDataURL(t *testing.T, u string) []byte {
	t.Helper()
	_, b64, ok := strings.Cut(u, ";base64,")
	if !ok || !strings.HasPrefix(u, "data:image/png") {
		t.Fatalf("not a PNG data URL: %.60q", u)
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameBytes(t *testing.T, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("image bytes differ: got %d bytes sha %x, want %d bytes sha %x", len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

// logLines returns the gateway's request log lines as maps.
func logLines(t *testing.T, gw *gwtest.Gateway) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(gw.Logs(), "\n") {
		if !strings.Contains(line, `"msg":"request"`) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, line)
		}
		out = append(out, m)
	}
	return out
}

// logWait bounds the waits for log lines. The gateway writes its log in
// batches, so a line can reach the log a moment after the response it
// belongs to: a test that reads the log first waits for the line it expects.
const logWait = 10 * time.Second

// waitLog waits until the gateway's log holds want and returns the log.
func waitLog(t *testing.T, gw *gwtest.Gateway, want string) string {
	t.Helper()
	var logs string
	waitFor(t, logWait, fmt.Sprintf("the log line %q", want), func() bool {
		logs = gw.Logs()
		return strings.Contains(logs, want)
	})
	return logs
}

// waitRequestLines waits until the gateway has logged n request lines or
// more and returns them.
func waitRequestLines(t *testing.T, gw *gwtest.Gateway, n int) []map[string]any {
	t.Helper()
	var lines []map[string]any
	waitFor(t, logWait, fmt.Sprintf("%d request log lines", n), func() bool {
		lines = logLines(t, gw)
		return len(lines) >= n
	})
	return lines
}

// waitRequestLine waits for the request line of resp (by its x-request-id)
// and returns it. The log is written in order, so what the gateway logged
// before that line (the request's warnings, the lines of earlier requests)
// is in the log too: a test checking that something was not logged waits
// for this first.
func waitRequestLine(t *testing.T, gw *gwtest.Gateway, resp *http.Response) map[string]any {
	t.Helper()
	rid := resp.Header.Get("x-request-id")
	if rid == "" {
		t.Fatal("the response has no x-request-id to find its log line by")
	}
	var line map[string]any
	waitFor(t, logWait, "the log line of request "+rid, func() bool {
		for _, l := range logLines(t, gw) {
			if l["request_id"] == rid {
				line = l
				return true
			}
		}
		return false
	})
	return line
}

// waitFor polls cond for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, d, what, cond)
}

func jsonDecode(b []byte, v any) error { return json.Unmarshal(b, v) }

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const sigterm = syscall.SIGTERM

// startOneReseller is a gateway in front of one fake reseller ("cheap"), with
// the client key in team design, run with more command-line args and
// environment.
func startOneReseller(t *testing.T, args []string, environ ...string) (*env, *fakeup.Server) {
	t.Helper()
	up := startFake(t, fakeup.Options{Kind: fakeup.OpenAI, Key: upstreamK1})
	cfg := fmt.Sprintf(`
server: { listen: "{{ADDR}}", shutdown_timeout: 5s }
providers:
  - { name: cheap, kind: openai, base_url: %s, api_key: %s, models: { %s: m }, price: { per_image: 0.035 } }
teams: [{ name: design }]
keys:
  - { name: ci, team: design, key: %s }
`, up.URL(), upstreamK1, model, clientKey)
	return &env{gw: gwtest.StartArgs(t, t.TempDir(), cfg, args, environ...), cheap: up}, up
}

// startFake starts a fake upstream for the test's lifetime.
func startFake(t *testing.T, o fakeup.Options) *fakeup.Server {
	t.Helper()
	s, err := fakeup.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}
