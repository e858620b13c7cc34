package jsonx

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math/rand/v2"
	"testing"
)

const imageSize = 2 << 20 // bytes of base64, as in a typical generated image

// imageB64 returns n bytes of base64 text from random bytes.
func imageB64(n int) string {
	raw := make([]byte, base64.StdEncoding.DecodedLen(n))
	r := rand.New(rand.NewPCG(5, 6))
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	return base64.StdEncoding.EncodeToString(raw)[:n]
}

// imageDoc returns a Gemini generateContent response whose image is n bytes
// of base64, with the usage member after the image, where the gateway has to
// look for it.
func imageDoc(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"candidates":[{"content":{"parts":[{"text":"Here is your image."},{"inlineData":{"mimeType":"image/png","data":"`)
	b.WriteString(imageB64(n))
	b.WriteString(`"}}],"role":"model"},"finishReason":"STOP","index":0}],` +
		`"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":1290,"totalTokenCount":1302},` +
		`"modelVersion":"gemini-2.5-flash-image"}`)
	return b.Bytes()
}

func BenchmarkSkipValue(b *testing.B) {
	doc := imageDoc(imageSize)
	b.ReportAllocs()
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		if _, err := SkipValue(doc, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetAfterImage(b *testing.B) {
	doc := imageDoc(imageSize)
	b.ReportAllocs()
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		if _, ok := Get(doc, "usageMetadata"); !ok {
			b.Fatal("usageMetadata not found")
		}
	}
}

func BenchmarkAppendString(b *testing.B) {
	s := imageB64(imageSize)
	dst := make([]byte, 0, len(s)+2)
	b.ReportAllocs()
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		dst = AppendString(dst[:0], s)
	}
}

func BenchmarkStringBytes(b *testing.B) {
	lit := []byte(`"` + imageB64(imageSize) + `"`)
	b.ReportAllocs()
	b.SetBytes(int64(len(lit)))
	for b.Loop() {
		if _, err := StringBytes(nil, lit); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetSmall is the per-request cost of reading one member of a small
// request body, where no scanning speed can hide per-call overhead.
func BenchmarkGetSmall(b *testing.B) {
	doc := []byte(`{"model":"gemini-2.5-flash-image","prompt":"a cat in a hat","n":1,"size":"1024x1024","response_format":"b64_json"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		if _, ok := Get(doc, "response_format"); !ok {
			b.Fatal("not found")
		}
	}
}

// BenchmarkValidRequest is a small, nested request body: per-call and
// per-container overhead dominate here, not the string scanner.
func BenchmarkValidRequest(b *testing.B) {
	doc := []byte(`{"model":"gemini-2.5-flash-image","messages":[{"role":"system","content":"You draw."},` +
		`{"role":"user","content":[{"type":"text","text":"a cat in a hat"},` +
		`{"type":"image_url","image_url":{"url":"https://example.com/cat.png","detail":"auto"}}]}],` +
		`"n":1,"stream":false,"temperature":0.7,"metadata":{"user":"u-123","tags":["a","b"]}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		if !Valid(doc) {
			b.Fatal("invalid")
		}
	}
}

// The encoding/json equivalents, to keep the reason for this package
// measured.

func BenchmarkStdlibValid(b *testing.B) {
	doc := imageDoc(imageSize)
	b.ReportAllocs()
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		if !json.Valid(doc) {
			b.Fatal("invalid")
		}
	}
}

func BenchmarkStdlibUnmarshalUsage(b *testing.B) {
	doc := imageDoc(imageSize)
	b.ReportAllocs()
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		var v struct {
			UsageMetadata json.RawMessage `json:"usageMetadata"`
		}
		if err := json.Unmarshal(doc, &v); err != nil || v.UsageMetadata == nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStdlibEncodeString(b *testing.B) {
	s := imageB64(imageSize)
	var buf bytes.Buffer
	buf.Grow(len(s) + 3)
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	b.ReportAllocs()
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		buf.Reset()
		if err := enc.Encode(s); err != nil {
			b.Fatal(err)
		}
	}
}
