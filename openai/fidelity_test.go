package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"nanogate/config"
	"nanogate/gateway"
	"nanogate/internal/fakeup"
	"nanogate/provider"
)

// fixtureResult is the Result a real provider makes of a recorded upstream
// answer, served on loopback by the fake upstream of kind.
func fixtureResult(t *testing.T, kind fakeup.Kind, fixture string) *provider.Result {
	t.Helper()
	return upstreamResult(t, kind, fakeup.Fixture(fixture))
}

// upstreamResult is the Result a real provider of kind makes of body, served
// on loopback by the fake upstream of that kind.
func upstreamResult(t *testing.T, kind fakeup.Kind, body []byte) *provider.Result {
	t.Helper()
	up, err := fakeup.Start(fakeup.Options{Kind: kind, Models: []string{"gemini-3-pro-image"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	up.SetFault(fakeup.Fault{Body: body})
	req, err := ParseChatRequest([]byte(`{"model":"m","messages":[{"role":"user","content":"two panels"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	pc := config.Provider{Name: "reseller", Kind: config.KindOpenAI, BaseURL: up.URL(), APIKey: "k"}
	if kind == fakeup.Gemini {
		pc.Name, pc.Kind = "google", config.KindGemini
	}
	p, err := provider.New(pc, provider.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	res, err := p.Chat(context.Background(), req, "gemini-3-pro-image")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(res.Release)
	return res
}

// TestInterleavedPartsKeepTheirOrder: a 3 Pro Image answer of text, image,
// text, image reaches the client in that order in markdown; the images
// format has the text joined in content and the images in order; data_url
// is the first image, the second beside it. Every image is JPEG, as its
// bytes say, although the first one is labelled image/png.
func TestInterleavedPartsKeepTheirOrder(t *testing.T) {
	res := fixtureResult(t, fakeup.Gemini, "gemini/response_3pro_interleaved_jpeg.json")
	a := &gateway.Answer{Result: res, Usage: gateway.Usage{PromptTokens: 570, Images: 2}}
	imgs := res.Choices[0].Images
	if len(imgs) != 2 {
		t.Fatalf("%d images", len(imgs))
	}
	url0 := "data:image/jpeg;base64," + string(imgs[0].B64)
	url1 := "data:image/jpeg;base64," + string(imgs[1].B64)

	msg := message(render(t, a, FormatMarkdown))
	want := "Here is the first panel.\n\n![image](" + url0 + ")\n\nAnd the second panel.\n\n![image](" + url1 + ")"
	if msg["content"] != want {
		t.Errorf("markdown content:\n%.300q\nwant\n%.300q", msg["content"], want)
	}

	msg = message(render(t, a, FormatImages))
	list, _ := msg["images"].([]any)
	if msg["content"] != "Here is the first panel.\n\nAnd the second panel." || len(list) != 2 ||
		imageURL(list[0]) != url0 || imageURL(list[1]) != url1 {
		t.Errorf("images format: %.300v", msg)
	}

	msg = message(render(t, a, FormatDataURL))
	list, _ = msg["images"].([]any)
	if msg["content"] != url0 || len(list) != 1 || imageURL(list[0]) != url1 {
		t.Errorf("data_url format: %.300v", msg)
	}
}

// TestResellerMarkdownKeepsItsOrder: a reseller's markdown of text, image,
// text is rendered back in that order.
func TestResellerMarkdownKeepsItsOrder(t *testing.T) {
	body := `{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"First.\n\n![image](data:image/png;base64,` +
		b64Tiny + `)\n\nSecond."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1300,"total_tokens":1305}}`
	res := fixtureBody(t, body)
	msg := message(render(t, &gateway.Answer{Result: res}, FormatMarkdown))
	if want := "First.\n\n![image](data:image/png;base64," + b64Tiny + ")\n\nSecond."; msg["content"] != want {
		t.Errorf("content %q, want %q", msg["content"], want)
	}
	msg = message(render(t, &gateway.Answer{Result: res}, FormatImages))
	if msg["content"] != "First.\n\nSecond." {
		t.Errorf("images format content %q", msg["content"])
	}
}

const b64Tiny = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFElEQVR42mP4z8DAAMIM////ZwAAHu8E/HMcU8wAAAAASUVORK5CYII="

// fixtureBody is fixtureResult for a reseller answer given inline.
func fixtureBody(t *testing.T, body string) *provider.Result {
	t.Helper()
	return upstreamResult(t, fakeup.OpenAI, []byte(body))
}

func imageURL(v any) string {
	m, _ := v.(map[string]any)
	iu, _ := m["image_url"].(map[string]any)
	s, _ := iu["url"].(string)
	return s
}

// TestRefusalAndLogprobsAlwaysPresent: OpenAI's schema requires
// message.refusal and choices[].logprobs (nullable); a safety block is a
// refusal with content null.
func TestRefusalAndLogprobsAlwaysPresent(t *testing.T) {
	for _, f := range []Format{FormatMarkdown, FormatDataURL, FormatImages} {
		m := render(t, answer("hi", "QUJD"), f)
		ch := m["choices"].([]any)[0].(map[string]any)
		msg := ch["message"].(map[string]any)
		if v, ok := msg["refusal"]; !ok || v != nil {
			t.Errorf("format %d: refusal %v (present %v), want null", f, v, ok)
		}
		if v, ok := ch["logprobs"]; !ok || v != nil {
			t.Errorf("format %d: logprobs %v (present %v), want null", f, v, ok)
		}
	}
	res := fixtureResult(t, fakeup.Gemini, "gemini/response_image_safety.json")
	msg := message(render(t, &gateway.Answer{Result: res}, FormatMarkdown))
	if v, ok := msg["content"]; !ok || v != nil {
		t.Errorf("content %v, want null", v)
	}
	if r, _ := msg["refusal"].(string); r != "The model returned no image (IMAGE_SAFETY)." {
		t.Errorf("refusal %q", msg["refusal"])
	}
}

// eventStream replays events as a gateway stream would hand them on.
type eventStream struct {
	evs []provider.Event
	i   int
	up  provider.Usage
}

func (s *eventStream) Next() (*provider.Event, error) {
	if s.i >= len(s.evs) {
		return nil, io.EOF
	}
	s.i++
	ev := &s.evs[s.i-1]
	if ev.Usage != nil {
		s.up = *ev.Usage
	}
	return ev, nil
}

func (s *eventStream) Close() {}

// Usage bills the prompt and the images as reported.
func (s *eventStream) Usage() gateway.Usage { return gateway.Usage{PromptTokens: s.up.PromptTokens} }

func (s *eventStream) PromptImageTokens() int64 { return s.up.PromptImageTokens }

// relay runs a stream of events through StreamBody and returns its chunks.
func relay(t *testing.T, f Format, evs ...provider.Event) []map[string]any {
	t.Helper()
	b := NewStreamBody(&eventStream{evs: evs}, StreamOptions{ID: "id1", Created: 7, Model: "m", Format: f, IncludeUsage: true})
	var w bytes.Buffer
	if _, err := b.WriteTo(&w); err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, ev := range strings.Split(strings.TrimSpace(w.String()), "\n\n") {
		data := strings.TrimPrefix(ev, "data: ")
		if data == "[DONE]" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(data), &m); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		out = append(out, m)
	}
	return out
}

// TestStreamChunksCarryLogprobsAndRefusal: every chunk choice has
// logprobs null, the first delta has refusal null, and the reason of a
// safety block streams in delta.refusal.
func TestStreamChunksCarryLogprobsAndRefusal(t *testing.T) {
	chunks := relay(t, FormatMarkdown,
		provider.Event{Text: []byte("I cannot draw that.")},
		provider.Event{Text: []byte(`\n\nThe model returned no image (IMAGE_SAFETY).`), Refusal: true},
		provider.Event{FinishReason: "content_filter"},
		provider.Event{Usage: &provider.Usage{Reported: true}})
	var content, refusal string
	for i, c := range chunks {
		choices := c["choices"].([]any)
		for _, ch := range choices {
			ch := ch.(map[string]any)
			if v, ok := ch["logprobs"]; !ok || v != nil {
				t.Errorf("chunk %d: logprobs %v (present %v)", i, v, ok)
			}
			d := ch["delta"].(map[string]any)
			if i == 0 {
				if v, ok := d["refusal"]; !ok || v != nil {
					t.Errorf("first delta %v: want refusal null", d)
				}
			}
			s, _ := d["content"].(string)
			content += s
			s, _ = d["refusal"].(string)
			refusal += s
		}
	}
	if content != "I cannot draw that." || refusal != "The model returned no image (IMAGE_SAFETY)." {
		t.Errorf("content %q refusal %q", content, refusal)
	}
}

// TestPromptImageTokensReported: usage.prompt_tokens_details.image_tokens
// is the upstream's count of input image tokens, bounded by the prompt
// tokens billed, in answers, in the stream's usage chunk and in the Images
// API's input_tokens_details.
func TestPromptImageTokensReported(t *testing.T) {
	res := fixtureResult(t, fakeup.Gemini, "gemini/response_3pro_interleaved_jpeg.json")
	for _, tt := range []struct {
		billed, want int64
	}{{570, 560}, {100, 100}, {0, 0}} {
		u := render(t, &gateway.Answer{Result: res, Usage: gateway.Usage{PromptTokens: tt.billed}}, FormatMarkdown)["usage"].(map[string]any)
		d := u["prompt_tokens_details"].(map[string]any)
		if d["image_tokens"] != float64(tt.want) || d["cached_tokens"] != float64(0) {
			t.Errorf("billed prompt %d: details %v, want image_tokens %d", tt.billed, d, tt.want)
		}
	}
	hostile := &provider.Result{Choices: []provider.Choice{{Text: []byte("x"), FinishReason: "stop"}},
		Usage: provider.Usage{PromptImageTokens: -5}}
	d := render(t, &gateway.Answer{Result: hostile, Usage: gateway.Usage{PromptTokens: 9}}, FormatMarkdown)["usage"].(map[string]any)["prompt_tokens_details"].(map[string]any)
	if d["image_tokens"] != float64(0) {
		t.Errorf("negative count: %v", d)
	}

	chunks := relay(t, FormatMarkdown,
		provider.Event{Text: []byte("ok")},
		provider.Event{FinishReason: "stop"},
		provider.Event{Usage: &provider.Usage{Reported: true, PromptTokens: 570, PromptImageTokens: 560}})
	last := chunks[len(chunks)-1]["usage"].(map[string]any)
	if got := last["prompt_tokens_details"].(map[string]any)["image_tokens"]; got != float64(560) || last["prompt_tokens"] != float64(570) {
		t.Errorf("stream usage %v", last)
	}

	iu := gateway.Usage{PromptTokens: 1140, Images: 2, ImageTokens: 2240}
	var m struct {
		Usage struct {
			InputTokens  int64 `json:"input_tokens"`
			InputDetails struct {
				TextTokens  int64 `json:"text_tokens"`
				ImageTokens int64 `json:"image_tokens"`
			} `json:"input_tokens_details"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(AppendImagesResponse(nil, nil, iu, 1120), &m); err != nil {
		t.Fatal(err)
	}
	if m.Usage.InputTokens != 1140 || m.Usage.InputDetails.ImageTokens != 1120 || m.Usage.InputDetails.TextTokens != 20 {
		t.Errorf("images API usage %+v", m.Usage)
	}
}
