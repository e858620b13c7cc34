package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"nanogate/accounting"
	"nanogate/auth"
	"nanogate/batch"
	"nanogate/config"
	"nanogate/gateway"
	"nanogate/images"
	"nanogate/images/signatures"
	"nanogate/internal/fakeup"
	"nanogate/internal/poll"
	"nanogate/metrics"
	"nanogate/openai"
	"nanogate/provider"
	"nanogate/ratelimit"
	"nanogate/router"
)

// The keys of the gateways startServer builds: ci and narrow in team
// design, ops in team ops.
const (
	ciKey     = "sk-proxy-test-ci-0123456789"
	narrowKey = "sk-proxy-test-narrow-0123456789"
	opsKey    = "sk-proxy-test-ops-0123456789"
	adminKey  = "admin-proxy-test-0123456789abcdef"
	upKey     = "up-proxy-test-secret-0123456789"
	// model is what the provider serves, gemini-2.5-flash-image under its
	// public name.
	testModel = "gemini-2.5-flash-image"
	// retiredModel is an id Google retired in favour of model.
	retiredModel = "gemini-2.5-flash-image-preview"
)

// serverOpts shape the gateway startServer builds. The zero value is a
// gateway in front of one fake reseller, with accounting, a filesystem
// image store and the Files and Batches APIs, logging into an observer.
type serverOpts struct {
	kind       fakeup.Kind // the upstream's wire format; fakeup.OpenAI when 0
	noProvider bool        // the provider is disabled (empty api_key) and left out, as main.go does
	server     string      // YAML lines under server:, e.g. "  max_body_bytes: 4096\n"
	top        string      // top-level YAML lines (files:, redis:, images:)
	keyCI      string      // YAML lines added to key ci
	teamDesign string      // YAML lines added to team design
	// noAccounting and noBatches leave State.Accounting and State.Batches
	// nil, as a gateway built without them.
	noAccounting, noBatches bool
	// adminListen serves /admin/* and /metrics on a listener of their own.
	adminListen bool
	// spoolPath overrides the usage spool's path.
	spoolPath string
	// redis is the address of a Redis (internal/redistest) for the limiter
	// and the usage records, with redis.on_outage onOutage ("open" when
	// empty); "" keeps the embedded state.
	redis, onOutage string
}

var quietRedis sync.Once

// testServer is a running gateway with all its parts.
type testServer struct {
	s        *Server
	url      string // http://127.0.0.1:port
	adminURL string // the admin listener's, when serverOpts.adminListen
	up       *fakeup.Server
	st       *State
	cfg      *config.Config
	rec      *accounting.Recorder
	logs     *observer.ObservedLogs
	serveErr chan error
}

// startServer builds a gateway the way main.go's newDeps and buildState do
// (config parsed from YAML, providers, router, gateway with limiter and
// accounting, image store, batch manager) and serves it on loopback until
// the test ends.
func startServer(t *testing.T, o serverOpts) *testServer {
	t.Helper()
	kind := o.kind
	if kind == 0 {
		kind = fakeup.OpenAI
	}
	up, err := fakeup.Start(fakeup.Options{Kind: kind, Key: upKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var aln net.Listener
	adminLine := ""
	if o.adminListen {
		if aln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		adminLine = "  admin_listen: " + aln.Addr().String() + "\n"
	}
	dir := t.TempDir()
	upModel, apiKey := "upstream-a", upKey
	if kind == fakeup.Gemini {
		upModel = fakeup.DefaultGeminiModel
	}
	if o.noProvider {
		apiKey = "" // the provider is disabled, as main.go skips it
	}
	providers := fmt.Sprintf(`providers:
  - name: up
    kind: %s
    base_url: %s
    api_key: %s
    models: { %s: %s, other-model: upstream-c }
    price: { per_image: 0.035, input_per_mtok: 0.30, output_per_mtok: 2.50 }
    timeout: 20s
`, map[fakeup.Kind]string{fakeup.OpenAI: "openai", fakeup.Gemini: "gemini"}[kind], up.URL(), apiKey, testModel, upModel)
	redisBlock := ""
	if o.redis != "" {
		if o.onOutage == "" {
			o.onOutage = "open"
		}
		redisBlock = fmt.Sprintf("redis: { addrs: [%q], on_outage: %s, dial_timeout: 1s, read_timeout: 1s, write_timeout: 1s, "+
			"decision_timeout: 1s }\n", o.redis, o.onOutage)
	}
	yaml := fmt.Sprintf(`server:
  listen: %s
  public_url: http://%s
%s%s%s
routing: { max_attempts: 1, health: { failure_threshold: 1000 } }
admin_key: %s
data_dir: %s
images:
  offload: { signing_key: %s }
%s%s
teams:
  - name: design
%s
  - name: ops
keys:
  - name: ci
    team: design
    key: %s
%s
  - name: narrow
    team: design
    key: %s
    models: [other-model]
  - name: ops
    team: ops
    key: %s
`, ln.Addr(), ln.Addr(), adminLine, o.server, providers, adminKey, dir, strings.Repeat("s", 32), redisBlock, o.top, o.teamDesign,
		ciKey, o.keyCI, narrowKey, opsKey)
	cfg, _, err := config.Parse([]byte(yaml), "test.yaml", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}

	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	m := metrics.New()
	ts := &testServer{up: up, cfg: cfg, logs: logs, serveErr: make(chan error, 2)}

	var entries []router.Entry
	for _, pc := range cfg.Providers {
		if pc.Disabled {
			continue
		}
		p, err := provider.New(pc, provider.Options{TokensPerImage: int64(cfg.Billing.TokensPerImage)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		entries = append(entries, router.Entry{Provider: p, Config: pc})
	}
	off, err := images.New(cfg.Images.Offload, cfg.Server.PublicURL, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { off.Close() })
	limiter := ratelimit.New(cfg, log)
	if cfg.Redis != nil {
		limiter = ratelimit.NewCoalescing(limiter, 50*time.Millisecond)
	}
	t.Cleanup(func() { limiter.Close() })

	var acct *gateway.Accounting
	if !o.noAccounting {
		var usage accounting.Store
		if rc := cfg.Redis; rc != nil {
			// go-redis would print every failed dial of an outage.
			quietRedis.Do(func() { redis.SetLogger(ratelimit.RedisLogger(zap.NewNop())) })
			c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: rc.Addrs, DialTimeout: rc.DialTimeout,
				ReadTimeout: rc.ReadTimeout, WriteTimeout: rc.WriteTimeout, ContextTimeoutEnabled: true})
			t.Cleanup(func() { c.Close() })
			usage = accounting.NewGuarded(accounting.NewRedis(c, rc, accounting.Options{}), accounting.GuardOptions{
				Timeout: max(rc.ReadTimeout, 2*rc.DecisionTimeout), Local: rc.OnOutage != "closed"})
		} else if usage, err = accounting.OpenMemory(filepath.Join(dir, "usage.jsonl"), accounting.Options{}, log); err != nil {
			t.Fatal(err)
		}
		spool := o.spoolPath
		if spool == "" {
			spool = filepath.Join(dir, "usage-spool.jsonl")
		}
		rec := accounting.NewRecorder(usage, accounting.RecorderOptions{Log: log, SpoolPath: spool})
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			rec.Close(ctx)
			usage.Close()
		})
		acct = &gateway.Accounting{Store: usage, Recorder: rec, Pricer: accounting.NewPricer(cfg),
			Teams: map[string]*config.Team{}, FailOpen: true}
		for i := range cfg.Teams {
			acct.Teams[cfg.Teams[i].Name] = &cfg.Teams[i]
		}
		ts.rec = rec
	}
	format, _ := openai.ParseFormat(cfg.Images.Format)
	st := &State{
		Config: cfg,
		Keys:   auth.NewTable(cfg.Keys),
		Gateway: gateway.New(router.New(entries, cfg.Routing, nil, log, m), gateway.Options{
			TokensPerImage: cfg.Billing.TokensPerImage, Offload: off, OffloadDefault: cfg.Images.Offload.Enabled,
			Log: log, Accounting: acct, Limiter: limiter, ModelOf: cfg.ModelOf, Catalog: cfg.Models(),
			Signatures: signatures.NewMemory(0),
		}),
		Limiter:    limiter,
		Accounting: acct,
		Format:     format,
		Offload:    off,
	}
	ts.st = st
	s := New(st, log, m)
	ts.s = s

	if !o.noBatches {
		files, err := batch.NewFS(filepath.Join(dir, "files"))
		if err != nil {
			t.Fatal(err)
		}
		bstore, err := batch.OpenLocal(filepath.Join(dir, "batches"), log)
		if err != nil {
			t.Fatal(err)
		}
		mgr := batch.New(bstore, files, batch.Options{Workers: cfg.Batch.Workers, Share: cfg.Batch.MaxShare,
			ReclaimAfter: cfg.Batch.ReclaimAfter, Log: log, Metrics: m,
			Webhooks: batch.NewWebhooks(batch.WebhookOptions{Log: log})})
		st.Batches = mgr
		mgr.Start(func() batch.Runtime { return s.State().BatchRuntime() })
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			mgr.Stop(ctx)
			bstore.Close()
		})
	}

	go func() { ts.serveErr <- s.Serve(ln) }()
	ts.url = "http://" + ln.Addr().String()
	if aln != nil {
		go func() { ts.serveErr <- s.ServeAdmin(aln) }()
		ts.adminURL = "http://" + aln.Addr().String()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	// An answer means Serve took its listener: a Shutdown before that
	// would find nothing to stop, and Serve would then run for ever.
	for _, u := range []string{ts.url, ts.adminURL} {
		if u == "" {
			continue
		}
		if r := send(t, "GET", u+"/healthz", "", "", nil); r.status != 200 {
			t.Fatalf("%s/healthz: %d", u, r.status)
		}
	}
	return ts
}

// httpClient bounds every exchange, so that a gateway that never answers
// fails the test instead of hanging it.
var httpClient = &http.Client{Timeout: 60 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// reply is a whole answer.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// call sends one request (body may be nil) with key as bearer ("" for
// none) and reads the whole answer. hdr holds more headers as name, value
// pairs.
func send(t *testing.T, method, url, key, contentType string, body []byte, hdr ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

// postJSON posts a JSON body as key.
func (ts *testServer) postJSON(t *testing.T, path, key, body string, hdr ...string) reply {
	t.Helper()
	return send(t, "POST", ts.url+path, key, "application/json", []byte(body), hdr...)
}

// get is a GET as key.
func (ts *testServer) get(t *testing.T, path, key string) reply {
	t.Helper()
	return send(t, "GET", ts.url+path, key, "", nil)
}

// envelope is the OpenAI error envelope as a client decodes it.
type envelope struct {
	Error *struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// wantError checks that r is an error of status in OpenAI's envelope, of
// type typ and code, with param ("" for null), JSON, with a message and a
// request id; it returns the message.
func wantError(t *testing.T, r reply, status int, typ, code, param string) string {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type %q", ct)
	}
	if r.header.Get("x-request-id") == "" {
		t.Error("error without x-request-id")
	}
	// The envelope has exactly the four fields, param and code present
	// even when null.
	var raw map[string]map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &raw); err != nil || len(raw) != 1 || len(raw["error"]) != 4 {
		t.Fatalf("not OpenAI's envelope: %s", r.body)
	}
	var e envelope
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == nil {
		t.Fatalf("not an error envelope: %s", r.body)
	}
	gotParam := ""
	if e.Error.Param != nil {
		gotParam = *e.Error.Param
	}
	gotCode := ""
	if e.Error.Code != nil {
		gotCode = *e.Error.Code
	}
	if e.Error.Type != typ || gotCode != code || gotParam != param || e.Error.Message == "" {
		t.Errorf("error type %q code %q param %q, want %q %q %q: %s", e.Error.Type, gotCode, gotParam, typ, code, param, r.body)
	}
	return e.Error.Message
}

// decode unmarshals r's body into v, failing the test when it is not JSON.
func decode(t *testing.T, r reply, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("answer is not JSON (%v): %.500s", err, r.body)
	}
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline: for what happens asynchronously (batches, log lines written
// after a stream's last byte).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 30*time.Second, what, cond)
}

// flush waits until every usage record so far reached the store, so that
// the usage APIs show it.
func (ts *testServer) flush(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.rec.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// requestLines returns the fields of the "request" log lines so far.
func (ts *testServer) requestLines() []map[string]any {
	var out []map[string]any
	for _, e := range ts.logs.FilterMessage("request").All() {
		out = append(out, e.ContextMap())
	}
	return out
}

// requestLine waits for the one request log line of request id rid.
func (ts *testServer) requestLine(t *testing.T, rid string) map[string]any {
	t.Helper()
	var line map[string]any
	waitFor(t, "the request log line of "+rid, func() bool {
		n := 0
		for _, l := range ts.requestLines() {
			if l["request_id"] == rid {
				line = l
				n++
			}
		}
		if n > 1 {
			t.Fatalf("request %s logged %d times", rid, n)
		}
		return n == 1
	})
	return line
}

// keyUsage is the part of GET /v1/usage the tests read.
type keyUsage struct {
	Period string `json:"period"`
	Key    struct {
		Name      string  `json:"name"`
		Requests  int64   `json:"requests"`
		Failed    int64   `json:"failed"`
		Images    int64   `json:"images"`
		CostUSD   float64 `json:"cost_usd"`
		PromptTok int64   `json:"prompt_tokens"`
	} `json:"key"`
	Team *struct {
		Name           string   `json:"name"`
		Requests       int64    `json:"requests"`
		BudgetUSD      *float64 `json:"budget_usd"`
		BudgetPeriod   string   `json:"budget_period"`
		RemainingUSD   *float64 `json:"remaining_usd"`
		BudgetSpentUSD *float64 `json:"budget_spent_usd"`
	} `json:"team"`
}

// usageOf flushes the records and reads GET /v1/usage as key.
func (ts *testServer) usageOf(t *testing.T, key string) keyUsage {
	t.Helper()
	ts.flush(t)
	r := ts.get(t, "/v1/usage", key)
	if r.status != 200 {
		t.Fatalf("usage: %d %s", r.status, r.body)
	}
	var u keyUsage
	decode(t, r, &u)
	return u
}

// multipartForm builds a multipart body of fields (name, value pairs, in
// order) and files (field, filename, content triples).
func multipartForm(t *testing.T, fields []string, files ...[3]string) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		if err := w.WriteField(fields[i], fields[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		fw, err := w.CreateFormFile(f[0], f[1])
		if err != nil {
			t.Fatal(err)
		}
		fw.Write([]byte(f[2]))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return w.FormDataContentType(), buf.Bytes()
}

// chatBody is a one-message chat request for m.
func chatBody(m string, extra string) string {
	return `{"model":"` + m + `","messages":[{"role":"user","content":"draw a nano banana"}]` + extra + `}`
}
