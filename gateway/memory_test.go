package gateway

import (
	"math"
	"testing"

	"nanogate/catalog"
	"nanogate/provider"
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
