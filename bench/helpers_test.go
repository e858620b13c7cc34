package bench

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"nanogate/accounting"
	"nanogate/auth"
	"nanogate/config"
	"nanogate/gateway"
	"nanogate/internal/fakeup"
	"nanogate/metrics"
	"nanogate/openai"
	"nanogate/provider"
	"nanogate/proxy"
	"nanogate/ratelimit"
	"nanogate/router"
)

const (
	clientKey   = "sk-nanogate-bench-0123456789abcdef"
	upstreamKey = "upstream-bench-key"
	smallModel  = "gemini-2.5-flash-image-preview" // the reseller's
	largeModel  = "gemini-2.5-flash-image"         // Gemini's
	smallImage  = 2048
	largeImage  = 1_500_000

	smallBody  = `{"model":"` + smallModel + `","messages":[{"role":"user","content":"draw a nano banana"}]}`
	largeBody  = `{"model":"` + largeModel + `","messages":[{"role":"user","content":"draw a nano banana"}]}`
	geminiBody = `{"contents":[{"role":"user","parts":[{"text":"draw a nano banana"}]}],"generationConfig":{"responseModalities":["TEXT","IMAGE"]}}`
)

// canned is an upstream that answers every request with the same recorded
// bytes, allocating nothing per request: B/op of a benchmark against it is
// the client side's alone (the fake upstreams, on net/http, allocate per
// request and would be counted too, being in the same process).
type canned struct {
	ln   net.Listener
	resp []byte
	wg   sync.WaitGroup
}

// cannedAnswers records, once per process, what the fake upstreams answer:
// the reseller's chat completion with a 2 KB image and Gemini's
// generateContent with a 1.5 MB one.
var cannedAnswers = sync.OnceValues(func() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, c := range []struct {
		name string
		o    fakeup.Options
		path string
		hdr  string
		body string
	}{
		{"openai", fakeup.Options{Kind: fakeup.OpenAI, Key: upstreamKey, ImageSize: smallImage}, "/v1/chat/completions",
			"Authorization", "Bearer " + upstreamKey},
		{"gemini", fakeup.Options{Kind: fakeup.Gemini, Key: upstreamKey, ImageSize: largeImage},
			"/v1beta/models/" + largeModel + ":generateContent", "x-goog-api-key", upstreamKey},
	} {
		s, err := fakeup.Start(c.o)
		if err != nil {
			return nil, err
		}
		body := `{"model":"` + smallModel + `","messages":[{"role":"user","content":"draw a nano banana"}]}`
		if c.name == "gemini" {
			body = geminiBody
		}
		req, _ := http.NewRequest("POST", "http://"+s.Addr()+c.path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(c.hdr, c.body)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			s.Close()
			return nil, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		s.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != 200 {
			return nil, &recordError{c.name, resp.StatusCode, string(b)}
		}
		out[c.name] = []byte("HTTP/1.1 200 OK\r\nContent-Type: " + resp.Header.Get("Content-Type") +
			"\r\nContent-Length: " + strconv.Itoa(len(b)) + "\r\n\r\n" + string(b))
	}
	return out, nil
})

type recordError struct {
	name   string
	status int
	body   string
}

func (e *recordError) Error() string {
	return "recording the " + e.name + " answer: status " + strconv.Itoa(e.status) + ": " + e.body
}

// startCanned serves the recorded answer of the named fake upstream.
func startCanned(tb testing.TB, name string) *canned {
	tb.Helper()
	answers, err := cannedAnswers()
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	c := &canned{ln: ln, resp: answers[name]}
	c.wg.Add(1)
	go c.accept()
	tb.Cleanup(func() { ln.Close(); c.wg.Wait() })
	return c
}

func (c *canned) addr() string { return c.ln.Addr().String() }

func (c *canned) accept() {
	defer c.wg.Done()
	for {
		nc, err := c.ln.Accept()
		if err != nil {
			return
		}
		go c.serve(nc)
	}
}

func (c *canned) serve(nc net.Conn) {
	defer nc.Close()
	br := bufio.NewReaderSize(nc, 64<<10)
	for {
		cl := 0
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 {
				break
			}
			if len(line) > 16 && bytes.EqualFold(line[:15], []byte("Content-Length:")) {
				cl, _ = strconv.Atoi(string(bytes.TrimSpace(line[15:])))
			}
		}
		if _, err := br.Discard(cl); err != nil {
			return
		}
		if _, err := nc.Write(c.resp); err != nil {
			return
		}
	}
}

// env is the gateway in-process, as main.go wires it, with embedded state
// (memory limiter and accounting) and upstreams serving canned answers.
type env struct {
	srv   *proxy.Server
	state *proxy.State
	close func()
}

func benchConfig(openaiAddr, geminiAddr string) string {
	return `server: { listen: "127.0.0.1:0" }
log: { level: info, format: json }
providers:
  - name: reseller
    kind: openai
    base_url: http://` + openaiAddr + `/v1
    api_key: ` + upstreamKey + `
    models: { ` + smallModel + `: ` + smallModel + ` }
    price: { per_image: 0.035, input_per_mtok: 0.30, output_per_mtok: 2.50 }
  - name: google
    kind: gemini
    base_url: http://` + geminiAddr + `/v1beta
    api_key: ` + upstreamKey + `
    models: { ` + largeModel + `: ` + largeModel + ` }
    price: { per_image: 0.039, input_per_mtok: 0.30, output_per_mtok: 2.50 }
teams:
  - { name: bench, rpm: 1000000000, tpm: 1000000000000, budget: { usd: 1000000000, period: monthly } }
keys:
  - { name: bench, team: bench, key: ` + clientKey + `, rpm: 1000000000, tpm: 1000000000000 }
`
}

func parseConfig(tb testing.TB, text string) *config.Config {
	tb.Helper()
	cfg, _, err := config.Parse([]byte(text), "bench.yaml", func(string) (string, bool) { return "", false })
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// jsonLogger is the production logger writing nowhere: the encoding of the
// request line is counted, the write syscall is not.
func jsonLogger() *zap.Logger {
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(ec), zapcore.AddSync(io.Discard), zap.InfoLevel))
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	oa, gm := startCanned(tb, "openai"), startCanned(tb, "gemini")
	cfg := parseConfig(tb, benchConfig(oa.addr(), gm.addr()))
	log := jsonLogger()
	m := metrics.New()
	limiter := ratelimit.NewMemory()
	store, err := accounting.OpenMemory("", accounting.Options{}, log)
	if err != nil {
		tb.Fatal(err)
	}
	rec := accounting.NewRecorder(store, accounting.RecorderOptions{
		Log: log, SpoolPath: filepath.Join(tb.TempDir(), "spool.jsonl"),
	})
	popts := provider.Options{TokensPerImage: int64(cfg.Billing.TokensPerImage)}
	var entries []router.Entry
	var provs []provider.Provider
	for _, pc := range cfg.Providers {
		var p provider.Provider
		var err error
		if pc.Kind == "openai" {
			p, err = provider.NewOpenAI(pc, popts)
		} else {
			p, err = provider.NewGemini(pc, popts)
		}
		if err != nil {
			tb.Fatal(err)
		}
		provs = append(provs, p)
		entries = append(entries, router.Entry{Provider: p, Config: pc})
	}
	acct := &gateway.Accounting{Store: store, Recorder: rec, Pricer: accounting.NewPricer(cfg),
		Teams: map[string]*config.Team{}, FailOpen: true}
	for i := range cfg.Teams {
		acct.Teams[cfg.Teams[i].Name] = &cfg.Teams[i]
	}
	st := &proxy.State{
		Config: cfg,
		Keys:   auth.NewTable(cfg.Keys),
		Gateway: gateway.New(router.New(entries, cfg.Routing, nil, log, m), gateway.Options{
			TokensPerImage: cfg.Billing.TokensPerImage, Log: log, Accounting: acct, Limiter: limiter,
		}),
		Limiter: limiter, Accounting: acct, Format: openai.FormatMarkdown,
	}
	e := &env{srv: proxy.New(st, log, m), state: st}
	e.close = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rec.Close(ctx)
		store.Close()
		for _, p := range provs {
			p.Close()
		}
	}
	tb.Cleanup(e.close)
	return e
}

// TestMain runs in a temporary directory, so that relative data/ paths of the
// packages under test stay out of the source tree.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nanogate-bench-")
	if err == nil {
		os.Chdir(dir)
	}
	code := m.Run()
	if err == nil {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}
