package provider

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"nanogate/internal/fakeup"
)

// benchImageSize is a real-sized generated image: 1.5 MB of PNG, 2 MB of
// base64 in the answer.
const benchImageSize = 1500 << 10

// withImage returns a fixture with its first image replaced by a large one.
func withImage(fixture string, size int) []byte {
	body := string(fakeup.Fixture(fixture))
	return []byte(strings.Replace(body, redB64, fakeup.PNGBase64(size), 1))
}

// BenchmarkGeminiParseResult is the non-stream hot path: reading a
// generateContent answer that carries a 1.5 MB image into a Result.
//
//	go test ./provider/ -run '^$' -bench Gemini -benchmem
func BenchmarkGeminiParseResult(b *testing.B) {
	p := testGemini(b, "", nil)
	body := withImage("gemini/response_image.json", benchImageSize)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		res, err := p.parseResult(body)
		if err != nil || res.Images() != 1 {
			b.Fatal(err)
		}
	}
}

// BenchmarkGeminiStream reads an SSE body whose image event is one 2 MB line
// through the stream into neutral events.
func BenchmarkGeminiStream(b *testing.B) {
	p := testGemini(b, "", nil)
	body := withImage("gemini/stream_image.sse", benchImageSize)
	r := bytes.NewReader(body)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		r.Reset(body)
		s := p.newStream(nil, r)
		images := 0
		for {
			ev, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if ev.Image != nil {
				images++
			}
		}
		s.Close()
		if images != 1 {
			b.Fatal("no image")
		}
	}
}

// BenchmarkGeminiRequest writes the generateContent body of a chat request
// that carries a 1.5 MB input image as a data URL.
func BenchmarkGeminiRequest(b *testing.B) {
	body := strings.Replace(string(fakeup.Fixture("openai/request_chat_multi_image.json")), redB64, fakeup.PNGBase64(benchImageSize), 1)
	req := parse(b, body)
	plan, rerr := planGemini(req, testModel)
	if rerr != nil {
		b.Fatal(rerr)
	}
	var dst []byte
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		dst = appendGeminiBody(dst[:0], req, plan)
	}
}
