package gateway

import (
	"errors"
	"math"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"nanogate/catalog"
	"nanogate/provider"
)

// TestBillClampsUpstreamUsage: usage an upstream reports is bounded before
// it reaches limits, money or metrics, counted per field and logged once per
// provider.
func TestBillClampsUpstreamUsage(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	clamped := map[string]int{}
	g := New(nil, Options{TokensPerImage: 1290, Log: zap.New(core),
		UsageClamped: func(p, f string) { clamped[p+"/"+f]++ }})
	req, err := ParseChatRequest([]byte(`{"model":"m","n":2,"messages":[{"role":"user","content":"draw a cat"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	caps := g.capsFor(req)
	if caps.prompt != g.estimateTokens(req)*promptSlack+promptFloor || caps.text != 2*provider.MaxOutputTokens || caps.perImage != 1290 {
		t.Fatalf("caps = %+v", caps)
	}
	tests := []struct {
		name           string
		prompt, text   int64
		wantP, wantT   int64
		clampedP, clT  int
		provider       string
		wantLogEntries int
	}{
		{"sane", 12, 30, 12, 30, 0, 0, "google", 0},
		{"negative prompt", -5, 30, 0, 30, 1, 0, "google", 1},
		{"huge prompt", 1e12, 0, caps.prompt, 0, 2, 0, "google", 1},
		{"negative text", 3, math.MinInt64, 3, 0, 2, 1, "google", 1},
		{"max int64 both", math.MaxInt64, math.MaxInt64, caps.prompt, caps.text, 3, 2, "google", 1},
		{"other provider logs once too", -1, 0, 0, 0, 1, 0, "reseller", 2},
		{"at the caps exactly", caps.prompt, caps.text, caps.prompt, caps.text, 1, 0, "reseller", 2},
	}
	for _, tt := range tests {
		u := g.bill(caps, tt.provider, provider.Usage{Reported: true, PromptTokens: tt.prompt, TextTokens: tt.text}, 2)
		if u.PromptTokens != tt.wantP || u.TextTokens != tt.wantT {
			t.Errorf("%s: usage = %+v, want prompt %d text %d", tt.name, u, tt.wantP, tt.wantT)
		}
		if u.ImageTokens != 2580 || u.CompletionTokens != u.TextTokens+2580 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
			t.Errorf("%s: derived counts %+v", tt.name, u)
		}
		if clamped[tt.provider+"/prompt"] != tt.clampedP || clamped[tt.provider+"/text"] != tt.clT {
			t.Errorf("%s: clamp counts %v", tt.name, clamped)
		}
		if logs.Len() != tt.wantLogEntries {
			t.Errorf("%s: %d warnings logged, want %d", tt.name, logs.Len(), tt.wantLogEntries)
		}
	}
}

// TestEstimatesSaturate: the largest request the parser admits, and values
// beyond it that only a bug could produce, estimate to bounded positive
// numbers rather than wrapping.
func TestEstimatesSaturate(t *testing.T) {
	g := New(nil, Options{TokensPerImage: 1290})
	req := &provider.ChatRequest{N: provider.MaxN, MaxTokens: provider.MaxOutputTokens}
	call := &Call{Req: req}
	if got, want := g.estimateCall(call), int64(provider.MaxN)*(1290+provider.MaxOutputTokens); got != want {
		t.Fatalf("estimate of the largest request = %d, want %d", got, want)
	}
	for _, mt := range []int64{math.MaxInt64, 3*(1<<61) - 1290, 432345564227567616} {
		req.MaxTokens = mt
		call.images = math.MaxInt32
		if got := g.estimateCall(call); got <= 0 {
			t.Errorf("max_tokens %d: estimate %d wrapped", mt, got)
		}
		if got := textAllowance(req); got != provider.MaxOutputTokens {
			t.Errorf("max_tokens %d: allowance %d", mt, got)
		}
	}
}

// TestCatalogueDecidesSizesAndImageTokens: the catalogue's model decides
// which sizes and aspect ratios pass and what one image bills; a model it
// does not know passes as sent and bills billing.tokens_per_image.
func TestCatalogueDecidesSizesAndImageTokens(t *testing.T) {
	cat := catalog.Default()
	g := New(nil, Options{TokensPerImage: 1290, ModelOf: func(public string) *catalog.Model {
		m, _, _ := cat.Lookup(map[string]string{"pro": "gemini-3-pro-image", "flash": "gemini-3.1-flash-image"}[public])
		return m
	}})
	parse := func(body string) *provider.ChatRequest {
		req, err := ParseChatRequest([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return req
	}
	for _, tc := range []struct {
		body     string
		param    string // "" when accepted
		perImage int64
		billedAt string
	}{
		{`{"model":"pro","messages":[{"role":"user","content":"x"}],"image_config":{"image_size":"4K"}}`, "", 2000, "4K"},
		{`{"model":"pro","messages":[{"role":"user","content":"x"}],"image_config":{"image_size":"2k"}}`, "", 1120, "2K"},
		{`{"model":"pro","messages":[{"role":"user","content":"x"}]}`, "", 1120, "1K"},
		{`{"model":"pro","messages":[{"role":"user","content":"x"}],"image_config":{"image_size":"512"}}`, "image_config.image_size", 0, ""},
		{`{"model":"pro","messages":[{"role":"user","content":"x"}],"image_config":{"aspect_ratio":"1:8"}}`, "image_config.aspect_ratio", 0, ""},
		{`{"model":"flash","messages":[{"role":"user","content":"x"}],"image_config":{"aspect_ratio":"1:8","image_size":"512"}}`, "", 747, "512"},
		{`{"model":"other","messages":[{"role":"user","content":"x"}],"image_config":{"aspect_ratio":"7:3","image_size":"8K"}}`, "", 1290, "8K"},
	} {
		req := parse(tc.body)
		err := g.checkModelParams(req)
		if tc.param != "" {
			var re *provider.RequestError
			if !errors.As(err, &re) || re.Param != tc.param {
				t.Errorf("%s: err %v, want a 400 on %s", tc.body, err, tc.param)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		if got := g.imageTokens(req); got != tc.perImage {
			t.Errorf("%s: %d tokens per image, want %d", tc.body, got, tc.perImage)
		}
		if got := g.imageSize(req); got != tc.billedAt {
			t.Errorf("%s: billed at size %q, want %q", tc.body, got, tc.billedAt)
		}
	}
}

func TestBillCountsTokensPerImage(t *testing.T) {
	g := New(nil, Options{TokensPerImage: 1290})
	u := g.bill(usageCaps{prompt: 100, text: 100, perImage: 1290}, "p", provider.Usage{PromptTokens: 10, TextTokens: 4}, 3)
	if u.ImageTokens != 3870 || u.CompletionTokens != 3874 || u.TotalTokens != 3884 || u.Images != 3 {
		t.Fatalf("usage = %+v", u)
	}
}

// TestImagesAnswerSumsPromptImageTokens: the Images API reports the input
// image tokens of every upstream call, a negative count as 0.
func TestImagesAnswerSumsPromptImageTokens(t *testing.T) {
	a := &ImagesAnswer{results: []*provider.Result{
		{Usage: provider.Usage{PromptImageTokens: 560}},
		{Usage: provider.Usage{PromptImageTokens: -7}},
		{Usage: provider.Usage{PromptImageTokens: 560}},
	}}
	if got := a.PromptImageTokens(); got != 1120 {
		t.Fatalf("PromptImageTokens = %d, want 1120", got)
	}
}
