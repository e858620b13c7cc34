package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"nanogate/internal/fakeup"
	"nanogate/internal/gwtest"
)

// startCatalogEnv is a gateway in front of fakeup's Google serving today's
// models under public names, priced by the catalogue.
func startCatalogEnv(t *testing.T) (*env, *fakeup.Server) {
	t.Helper()
	// Google knows today's models only: the retired preview is a 404.
	google := startFake(t, fakeup.Options{Kind: fakeup.Gemini, Key: googleKey,
		Models: []string{"gemini-2.5-flash-image", "gemini-3-pro-image", "gemini-3.1-flash-image"}})
	cfg := fmt.Sprintf(`
server: { listen: "{{ADDR}}", shutdown_timeout: 10s }
log: { level: info, format: json }
providers:
  - name: google
    kind: gemini
    base_url: %s
    api_key: ${GOOGLE_KEY}
    models:
      nano-banana: gemini-2.5-flash-image-preview
      nano-banana-pro: gemini-3-pro-image
      nano-banana-2: gemini-3.1-flash-image
      gemini-2.5-flash-image: gemini-2.5-flash-image
    price: { per_image: 0.039, input_per_mtok: 0.30, output_per_mtok: 2.50 }
routing: { health: { failure_threshold: 100 } }
teams:
  - name: design
keys:
  - name: ci
    team: design
    key: ${CLIENT_KEY}
`, google.URL())
	gw := gwtest.Start(t, cfg, "GOOGLE_KEY="+googleKey, "CLIENT_KEY="+clientKey)
	return &env{gw: gw}, google
}

// TestTodaysModelsAreBilledBySize: a 3 Pro Image at 4K bills 2000 image
// tokens and $0.24; 3.1 Flash Image at 512 bills 747 and $0.045; the
// retired 2.5 preview name is sent to Google as its successor and still
// bills 1290 and $0.039. The size reaches Google as imageConfig.imageSize.
func TestTodaysModelsAreBilledBySize(t *testing.T) {
	e, google := startCatalogEnv(t)
	for _, tc := range []struct {
		model, imageConfig, upstream, wantSize string
		tokens                                 int
		cost                                   float64
	}{
		{"nano-banana-pro", `,"image_config":{"image_size":"4K","aspect_ratio":"16:9"}`, "gemini-3-pro-image", "4K", 2000, 0.24},
		{"nano-banana-2", `,"image_config":{"image_size":"512","aspect_ratio":"1:8"}`, "gemini-3.1-flash-image", "512", 747, 0.045},
		{"nano-banana", ``, "gemini-2.5-flash-image", "", 1290, 0.039},
	} {
		before := e.usage(t).Team.CostUSD
		resp := e.post(t, `{"model":"`+tc.model+`","messages":[{"role":"user","content":"draw"}]`+tc.imageConfig+`}`)
		var c completion
		if err := json.Unmarshal(readAll(t, resp), &c); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: status %d %v", tc.model, resp.StatusCode, err)
		}
		if c.Usage.CompletionTokensDetails.ImageTokens != tc.tokens {
			t.Errorf("%s: %d image tokens, want %d", tc.model, c.Usage.CompletionTokensDetails.ImageTokens, tc.tokens)
		}
		if p := google.LastPath(); !strings.Contains(p, "/models/"+tc.upstream+":") {
			t.Errorf("%s: Google was asked for %s", tc.model, p)
		}
		var sent struct {
			GenerationConfig struct {
				ImageConfig struct {
					ImageSize string `json:"imageSize"`
				} `json:"imageConfig"`
			} `json:"generationConfig"`
		}
		json.Unmarshal(google.LastBody(), &sent)
		if got := sent.GenerationConfig.ImageConfig.ImageSize; got != tc.wantSize {
			t.Errorf("%s: imageSize %q sent, want %q", tc.model, got, tc.wantSize)
		}
		var spent float64
		waitFor(t, 10*time.Second, "the record", func() bool {
			spent = e.usage(t).Team.CostUSD - before
			return spent > 0
		})
		if d := spent - tc.cost; d > 0.0005 || d < -0.0005 {
			t.Errorf("%s: billed $%.6f, want about $%v (the image plus a few text tokens)", tc.model, spent, tc.cost)
		}
	}
	// The team's usage shows each model at the size it was billed at.
	var u struct {
		Team struct {
			Sizes []struct {
				Model   string  `json:"model"`
				Size    string  `json:"size"`
				Images  int64   `json:"images"`
				CostUSD float64 `json:"cost_usd"`
			} `json:"sizes"`
		} `json:"team"`
	}
	if code := getJSON(t, e.gw.URL+"/v1/usage", clientKey, &u); code != 200 {
		t.Fatalf("/v1/usage: %d", code)
	}
	sizes := map[string]float64{}
	for _, s := range u.Team.Sizes {
		sizes[s.Model+" "+s.Size] = s.CostUSD
	}
	if len(sizes) != 3 || sizes["nano-banana-pro 4K"] < 0.24 || sizes["nano-banana-2 512"] < 0.045 || sizes["nano-banana 1K"] < 0.039 {
		t.Errorf("usage by size %+v", u.Team.Sizes)
	}

	// What a model cannot do is refused before Google is asked.
	n := google.Requests()
	env := expectError(t, e.post(t, `{"model":"nano-banana-pro","messages":[{"role":"user","content":"draw"}],"image_config":{"image_size":"512"}}`), 400, "invalid_request")
	if env.Error.Param == nil || *env.Error.Param != "image_config.image_size" || !strings.Contains(env.Error.Message, "1K, 2K, 4K") {
		t.Errorf("refusal %+v", env.Error)
	}
	expectError(t, e.post(t, `{"model":"nano-banana","messages":[{"role":"user","content":"draw"}],"image_config":{"aspect_ratio":"1:8"}}`), 400, "invalid_request")
	if google.Requests() != n {
		t.Error("a refused request reached Google")
	}
}

// TestRetiredModelIsServedByItsSuccessorWithAWarning: a client still asking
// for gemini-2.5-flash-image-preview (retired 2025-10-31) is served by
// gemini-2.5-flash-image with a Warning header, and the gateway logs it
// once.
func TestRetiredModelIsServedByItsSuccessorWithAWarning(t *testing.T) {
	e, _ := startCatalogEnv(t)
	for range 2 {
		resp := e.post(t, `{"model":"gemini-2.5-flash-image-preview","messages":[{"role":"user","content":"draw"}]}`)
		readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if w := resp.Header.Get("Warning"); !strings.Contains(w, "retired by Google on 2025-10-31; use gemini-2.5-flash-image") {
			t.Errorf("Warning %q", w)
		}
	}
	resp := e.post(t, `{"model":"nano-banana-pro","messages":[{"role":"user","content":"draw"}]}`)
	readAll(t, resp)
	if w := resp.Header.Get("Warning"); w != "" {
		t.Errorf("a current model got Warning %q", w)
	}
	waitRequestLine(t, e.gw, resp)
	if n := strings.Count(e.gw.Logs(), "asked for a model Google retired"); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}
}

// TestChatNIsFannedOutAsCallsOfOne: n 2 on chat is two upstream calls of one
// answer each (Google's image models refuse candidateCount), two choices
// and two images billed, streamed or not.
func TestChatNIsFannedOutAsCallsOfOne(t *testing.T) {
	e, google := startCatalogEnv(t)
	resp := e.post(t, `{"model":"nano-banana-pro","n":2,"messages":[{"role":"user","content":"draw"}]}`)
	var c completion
	if err := json.Unmarshal(readAll(t, resp), &c); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d %v", resp.StatusCode, err)
	}
	if len(c.Choices) != 2 || google.Requests() != 2 {
		t.Fatalf("%d choices from %d upstream calls", len(c.Choices), google.Requests())
	}
	for i, ch := range c.Choices {
		if !mdImage.MatchString(ch.Message.Content) {
			t.Errorf("choice %d has no image", i)
		}
	}
	if strings.Contains(string(google.LastBody()), "candidateCount") {
		t.Error("candidateCount was sent to Google")
	}
	if c.Usage.CompletionTokensDetails.ImageTokens != 2*1120 {
		t.Errorf("%d image tokens, want 2 x 1120", c.Usage.CompletionTokensDetails.ImageTokens)
	}
	var u usageView
	waitFor(t, 10*time.Second, "both records", func() bool { u = e.usage(t); return u.Team.Images == 2 })
	if u.Team.CostUSD < 0.268 || u.Team.CostUSD > 0.27 {
		t.Errorf("two 1K images billed $%v, want about 2 x $0.134", u.Team.CostUSD)
	}
	// A stream of n 2 is two upstream streams relayed as choices 0 and 1,
	// each with its image, usage summed once at the end.
	before := google.Requests()
	resp = e.post(t, `{"model":"nano-banana-pro","n":2,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"draw"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("stream status %d: %s", resp.StatusCode, readAll(t, resp))
	}
	content := map[int]string{}
	finished := map[int]bool{}
	var streamUsage *usage
	for _, data := range sseEvents(t, resp) {
		if data == "[DONE]" {
			continue
		}
		var ch struct {
			Choices []struct {
				Index int `json:"index"`
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *usage `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &ch); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		for _, c := range ch.Choices {
			content[c.Index] += c.Delta.Content
			if c.FinishReason != nil {
				finished[c.Index] = true
			}
		}
		if ch.Usage != nil {
			streamUsage = ch.Usage
		}
	}
	if len(content) != 2 || !mdImage.MatchString(content[0]) || !mdImage.MatchString(content[1]) || !finished[0] || !finished[1] {
		t.Errorf("stream choices %d, finished %v", len(content), finished)
	}
	if google.Requests()-before != 2 {
		t.Errorf("%d upstream streams, want 2", google.Requests()-before)
	}
	if streamUsage == nil || streamUsage.CompletionTokensDetails.ImageTokens != 2*1120 {
		t.Errorf("stream usage %+v", streamUsage)
	}
}

// TestCheapestIsByTheModelsPriceAtTheSize: the cheapest strategy ranks a
// provider by what it bills for the model and size asked for. Google's
// provider price is 2.5 Flash Image's $0.039, but its 3 Pro Image bills the
// catalogue's $0.134 (1K, 2K) or $0.24 (4K): a reseller at $0.05 serves 3
// Pro at 2K and Google serves it at 4K, where the reseller charges $0.30.
func TestCheapestIsByTheModelsPriceAtTheSize(t *testing.T) {
	google := startFake(t, fakeup.Options{Kind: fakeup.Gemini, Key: googleKey,
		Models: []string{"gemini-2.5-flash-image", "gemini-3-pro-image"}})
	reseller := startFake(t, fakeup.Options{Kind: fakeup.OpenAI, Key: upstreamK1})
	cfg := fmt.Sprintf(`
server: { listen: "{{ADDR}}", shutdown_timeout: 10s }
log: { level: info, format: json }
admin_key: "%s"
providers:
  - name: google
    kind: gemini
    base_url: %s
    api_key: ${GOOGLE_KEY}
    models: { nano-banana: gemini-2.5-flash-image, nano-banana-pro: gemini-3-pro-image }
    price: { per_image: 0.039, input_per_mtok: 0.30, output_per_mtok: 2.50 }
  - name: reseller
    kind: openai
    base_url: %s
    api_key: ${UP_KEY}
    models: { nano-banana: gemini-2.5-flash-image, nano-banana-pro: gemini-3-pro-image }
    price: { per_image: 0.045 }
    prices:
      nano-banana-pro: { per_image: 0.05, per_image_by_size: { 4K: 0.30 } }
teams:
  - name: design
keys:
  - name: ci
    team: design
    key: ${CLIENT_KEY}
`, longAdminKey, google.URL(), reseller.URL())
	e := &env{gw: gwtest.Start(t, cfg, "GOOGLE_KEY="+googleKey, "UP_KEY="+upstreamK1, "CLIENT_KEY="+clientKey)}
	// /admin/providers shows the prices the ranking uses.
	var pv struct {
		Providers []struct {
			Name    string             `json:"name"`
			PerImg  float64            `json:"price_per_image_usd"`
			ByModel map[string]float64 `json:"price_per_image_usd_by_model"`
		} `json:"providers"`
	}
	if code := getJSON(t, e.gw.URL+"/admin/providers", longAdminKey, &pv); code != 200 || len(pv.Providers) != 2 {
		t.Fatalf("/admin/providers: %d %+v", code, pv)
	}
	want := map[string]map[string]float64{"google": {"nano-banana": 0.039, "nano-banana-pro": 0.134},
		"reseller": {"nano-banana": 0.045, "nano-banana-pro": 0.05}}
	for _, p := range pv.Providers {
		for m, usd := range want[p.Name] {
			if got := p.ByModel[m]; got < usd-1e-9 || got > usd+1e-9 {
				t.Errorf("%s: %s at $%v per image, want $%v (%+v)", p.Name, m, got, usd, p.ByModel)
			}
		}
	}
	for _, tc := range []struct{ model, imageConfig, want string }{
		{"nano-banana-pro", `,"image_config":{"image_size":"2K"}`, "reseller"},
		{"nano-banana-pro", ``, "reseller"},
		{"nano-banana-pro", `,"image_config":{"image_size":"4K"}`, "google"},
		{"nano-banana", ``, "google"},
	} {
		resp := e.post(t, `{"model":"`+tc.model+`","messages":[{"role":"user","content":"draw"}]`+tc.imageConfig+`}`)
		readAll(t, resp)
		if got := resp.Header.Get("x-nanogate-provider"); resp.StatusCode != 200 || got != tc.want {
			t.Errorf("%s%s: status %d, served by %q; want %s", tc.model, tc.imageConfig, resp.StatusCode, got, tc.want)
		}
	}
}
