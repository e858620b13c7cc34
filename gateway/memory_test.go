package gateway

import (
	"math"
	"testing"

	"nanogate/auth"
	"nanogate/catalog"
	"nanogate/config"
	"nanogate/images"
	"nanogate/provider"
	"nanogate/router"
)

func TestAnswerBytes(t *testing.T) {
	m := &catalog.Model{Name: "pro", DefaultSize: "2K"}
	g := &Gateway{modelOf: func(public string) *catalog.Model {
		if public == "pro" {
			return m
		}
		return nil
	}}
	cases := []struct {
		req  provider.ChatRequest
		want int64
	}{
		{provider.ChatRequest{Model: "other", N: 1}, 1024*1024*2 + answerOverhead},
		{provider.ChatRequest{Model: "other"}, 1024*1024*2 + answerOverhead}, // N absent is 1
		{provider.ChatRequest{Model: "pro", N: 1}, 2048*2048*2 + answerOverhead},
		{provider.ChatRequest{Model: "pro", N: 3, ImageSize: "4K"}, 3*4096*4096*2 + answerOverhead},
		{provider.ChatRequest{Model: "other", N: 2, ImageSize: "512"}, 2*512*512*2 + answerOverhead},
		{provider.ChatRequest{Model: "other", N: math.MaxInt, ImageSize: "4K"}, math.MaxInt64},
	}
	for _, c := range cases {
		if got := g.AnswerBytes(&c.req); got != c.want {
			t.Errorf("AnswerBytes(%s n=%d size=%q) = %d, want %d", c.req.Model, c.req.N, c.req.ImageSize, got, c.want)
		}
	}
}

func TestSizeEdge(t *testing.T) {
	for in, want := range map[string]int64{"512": 512, "1K": 1024, "2k": 2048, "4K": 4096, "": 1024, "9K": 1024,
		"0K": 1024, "-1K": 1024, "99999": 1024, "32": 1024, "1024x1024": 1024, "abc": 1024} {
		if got := sizeEdge(in); got != want {
			t.Errorf("sizeEdge(%q) = %d, want %d", in, got, want)
		}
	}
}

// TestForwardedBytes: an answer forwarded holds a window whatever its
// provider, and the image writer's buffers when its images are stored on
// the way; one read whole (n > 1) is counted whole, never as a window.
func TestForwardedBytes(t *testing.T) {
	g := &Gateway{}
	whole := g.AnswerBytes(&provider.ChatRequest{Model: "m", N: 1})
	on, off := true, false
	cases := []struct {
		name    string
		call    Call
		offload bool
		want    int64
	}{
		{"one image", Call{Req: &provider.ChatRequest{Model: "m", N: 1}}, false, forwardedAnswerBytes},
		{"n absent", Call{Req: &provider.ChatRequest{Model: "m"}}, false, forwardedAnswerBytes},
		{"n > 1", Call{Req: &provider.ChatRequest{Model: "m", N: 3}}, false, g.AnswerBytes(&provider.ChatRequest{Model: "m", N: 3})},
		{"offload", Call{Req: &provider.ChatRequest{Model: "m", N: 1}}, true, forwardedAnswerBytes + offloadWriterBytes},
		{"offload off for the key", Call{Req: &provider.ChatRequest{Model: "m", N: 1}, Caller: &auth.Caller{OffloadImages: &off}}, true, forwardedAnswerBytes},
		{"offload on for the key", Call{Req: &provider.ChatRequest{Model: "m", N: 1}, Caller: &auth.Caller{OffloadImages: &on}}, true, forwardedAnswerBytes + offloadWriterBytes},
		{"offload and n > 1", Call{Req: &provider.ChatRequest{Model: "m", N: 2}}, true, g.AnswerBytes(&provider.ChatRequest{Model: "m", N: 2})},
	}
	for _, c := range cases {
		g.offload, g.offloadDefault = nil, false
		if c.offload {
			g.offload, g.offloadDefault = &images.Offloader{}, true
		}
		if got := g.ForwardedBytes(&c.call); got != c.want {
			t.Errorf("%s: ForwardedBytes = %d, want %d", c.name, got, c.want)
		}
		if forwards := g.Forwards(&c.call); forwards != (c.want < whole) {
			t.Errorf("%s: Forwards = %v", c.name, forwards)
		}
	}
	if whole <= forwardedAnswerBytes {
		t.Fatalf("an answer read whole (%d bytes) would not hold more than a window", whole)
	}
}

// TestStreamBytes: a stream holds a window whoever serves it (both kinds
// forward streams in windows) when its images stay inline; offload or
// n > 1 count the answer whole.
func TestStreamBytes(t *testing.T) {
	var entries []router.Entry
	for _, pc := range []config.Provider{
		{Name: "g", Kind: config.KindGemini, BaseURL: "http://127.0.0.1:1/v1beta", APIKey: "k", Models: map[string]string{"gem": "gemini-2.5-flash-image", "both": "gemini-2.5-flash-image"}},
		{Name: "r", Kind: config.KindOpenAI, BaseURL: "http://127.0.0.1:1/v1", APIKey: "k", Models: map[string]string{"both": "x", "resold": "x"}},
	} {
		p, err := provider.New(pc, provider.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		entries = append(entries, router.Entry{Provider: p, Config: pc})
	}
	g := &Gateway{router: router.New(entries, config.Routing{MaxAttempts: 2}, nil, nil, nil)}
	window := int64(forwardedAnswerBytes)
	for _, c := range []struct {
		name    string
		req     provider.ChatRequest
		offload bool
		want    int64
	}{
		{"gemini only", provider.ChatRequest{Model: "gem", N: 1}, false, window},
		{"a reseller may serve", provider.ChatRequest{Model: "both", N: 1}, false, window},
		{"reseller only", provider.ChatRequest{Model: "resold", N: 1}, false, window},
		{"n absent", provider.ChatRequest{Model: "resold"}, false, window},
		{"offload", provider.ChatRequest{Model: "gem", N: 1}, true, g.AnswerBytes(&provider.ChatRequest{Model: "gem", N: 1})},
		{"offload, reseller", provider.ChatRequest{Model: "resold", N: 1}, true, g.AnswerBytes(&provider.ChatRequest{Model: "resold", N: 1})},
		{"n > 1", provider.ChatRequest{Model: "gem", N: 2}, false, g.AnswerBytes(&provider.ChatRequest{Model: "gem", N: 2})},
		{"n > 1, reseller", provider.ChatRequest{Model: "resold", N: 2}, false, g.AnswerBytes(&provider.ChatRequest{Model: "resold", N: 2})},
	} {
		g.offload, g.offloadDefault = nil, false
		if c.offload {
			g.offload, g.offloadDefault = &images.Offloader{}, true
		}
		if got := g.StreamBytes(&Call{Req: &c.req}); got != c.want {
			t.Errorf("%s: StreamBytes = %d, want %d", c.name, got, c.want)
		}
	}
}
