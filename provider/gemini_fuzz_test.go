package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"nanogate/internal/fakeup"
	"nanogate/internal/jsonx"
	"nanogate/internal/safefetch"
)

// anyFetcher serves the same small PNG for every URL.
type anyFetcher struct{}

func (anyFetcher) FetchImage(context.Context, string, safefetch.Budget) (*safefetch.Image, error) {
	return &safefetch.Image{MIME: "image/png", Data: redPNG}, nil
}

// FuzzGeminiRequest translates any chat request the gateway accepts: the
// result must be one JSON document with an inlineData part for every image
// part of the request.
func FuzzGeminiRequest(f *testing.F) {
	files, _ := filepath.Glob("testdata/gemini/request/*.json")
	for _, file := range files {
		if !strings.HasSuffix(file, ".golden.json") {
			b, _ := os.ReadFile(file)
			f.Add(b)
		}
	}
	f.Add(fakeup.Fixture("openai/request_chat_multi_image.json"))
	f.Add([]byte(`{"model":"m","messages":[{"role":"assistant","content":"a ![x](data:image/png;base64,QUJD) \\n ![y](data:image\/png;base64,QUJD"},{"role":"user","content":"\\\\n"}]}`))
	p := testGemini(f, "", anyFetcher{})
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := ParseChatRequest(body)
		if err != nil {
			return
		}
		plan, rerr := planGemini(req, testModel)
		if rerr != nil {
			if rerr.Msg == "" {
				t.Fatal("refusal without a message")
			}
			return
		}
		if err := p.images.Fetch(context.Background(), req); err != nil {
			t.Fatalf("fetch: %v", err)
		}
		defer req.ReleaseImages()
		out := appendGeminiBody(nil, req, plan)
		if !json.Valid(out) || !jsonx.Valid(out) {
			t.Fatalf("not JSON: %q", out)
		}
		images := 0
		for _, m := range req.Messages {
			for _, pt := range m.Parts {
				if pt.Image != nil {
					images++
				}
			}
		}
		if got := bytes.Count(out, []byte(`{"inlineData":`)); got < images {
			t.Fatalf("%d inlineData parts for %d images", got, images)
		}
	})
}

// checkEvent fails on an event the gateway could not write back: text that
// is not JSON string content, an image that is not base64.
func checkEvent(t *testing.T, ev *Event) {
	t.Helper()
	if ev.Text != nil && !jsonx.Valid(append(append([]byte{'"'}, ev.Text...), '"')) {
		t.Fatalf("text is not JSON string content: %q", ev.Text)
	}
	if ev.Image != nil && (!ValidBase64(ev.Image.B64) || !strings.HasPrefix(ev.Image.MIME, "image/")) {
		t.Fatalf("bad image %q %.40q", ev.Image.MIME, ev.Image.B64)
	}
	if ev.Choice < 0 || ev.Choice >= MaxN {
		t.Fatalf("choice %d", ev.Choice)
	}
}

// FuzzGeminiStream reads any body as Google's SSE stream: it must end, and
// every event must be writable as OpenAI chunks.
func FuzzGeminiStream(f *testing.F) {
	f.Add(fakeup.Fixture("gemini/stream_image.sse"))
	f.Add([]byte("data: {\"candidates\": [{\"finishReason\": \"NO_IMAGE\"}]}\n\n"))
	f.Add([]byte("data: {\"promptFeedback\": {\"blockReason\": \"SAFETY\"}}\r\n\r\ndata: {\"error\": {\"code\": 500}}"))
	f.Add([]byte("data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\\\"\\\\\"}, {\"inlineData\": {\"mimeType\": \"image/png\", \"data\": \"QUJD\"}}]}, \"finishReason\": \"SAFETY\", \"finishMessage\": \"\\u00e9\", \"index\": 2}]}\n\n"))
	p := testGemini(f, "", nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		s := p.newStream(nil, bytes.NewReader(body))
		defer s.Close()
		for i := 0; i <= len(body)+2; i++ {
			ev, err := s.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				if _, ok := AsError(err); !ok {
					t.Fatalf("error is not an *Error: %v", err)
				}
				return
			}
			checkEvent(t, ev)
		}
		t.Fatal("stream does not end")
	})
}

// FuzzGeminiResult reads any body as a generateContent answer.
func FuzzGeminiResult(f *testing.F) {
	for _, b := range responseInputsFromDisk() {
		f.Add(b)
	}
	p := testGemini(f, "", nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		res, err := p.parseResult(body)
		if err != nil {
			if pe, ok := AsError(err); !ok || pe.Kind != KindInvalidResponse {
				t.Fatalf("err = %v", err)
			}
			return
		}
		if len(res.Choices) == 0 {
			t.Fatal("a result without choices")
		}
		for i := range res.Choices {
			c := &res.Choices[i]
			checkEvent(t, &Event{Choice: c.Index, Text: c.Text})
			for j := range c.Images {
				checkEvent(t, &Event{Choice: c.Index, Image: &c.Images[j]})
			}
			if c.FinishReason == "" {
				t.Fatal("no finish reason")
			}
		}
	})
}

func responseInputsFromDisk() [][]byte {
	var out [][]byte
	for _, name := range []string{"response_image", "response_two_images", "response_text_only", "response_no_image",
		"response_image_safety", "response_prompt_blocked"} {
		out = append(out, fakeup.Fixture("gemini/"+name+".json"))
	}
	files, _ := filepath.Glob("testdata/gemini/response/response_*.json")
	for _, f := range files {
		if !strings.HasSuffix(f, ".golden.json") {
			b, _ := os.ReadFile(f)
			out = append(out, b)
		}
	}
	return out
}
