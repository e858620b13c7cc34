package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"nanogate/config"
	"nanogate/gateway"
	"nanogate/internal/fakeup"
	"nanogate/provider"
)

// usageFor is the bill the tests give both renderings of one answer.
func usageFor(u provider.Usage, images int) gateway.Usage {
	out := gateway.Usage{PromptTokens: u.PromptTokens, TextTokens: u.TextTokens, Images: int64(images),
		ImageTokens: int64(images) * 1290}
	out.CompletionTokens = out.TextTokens + out.ImageTokens
	out.TotalTokens = out.PromptTokens + out.CompletionTokens
	return out
}

// forwarded is a provider's forwarded answer as the gateway hands it on,
// with the tests' bill.
type forwarded struct {
	st      provider.Stream
	up      provider.Usage
	images  int
	created int64
	closed  bool
}

func (f *forwarded) Next() (*provider.Event, error) {
	ev, err := f.st.Next()
	if err != nil {
		return nil, err
	}
	if ev.Usage != nil {
		f.up = *ev.Usage
	}
	if ev.Piece != nil && ev.Piece.Step == provider.ImageEnd {
		f.images++
	}
	return ev, nil
}
func (f *forwarded) Usage() gateway.Usage     { return usageFor(f.up, f.images) }
func (f *forwarded) PromptImageTokens() int64 { return f.up.PromptImageTokens }
func (f *forwarded) Close()                   { f.st.Close(); f.closed = true }
func (f *forwarded) Head() (string, int64) {
	id, _ := f.st.(provider.Head).Head()
	return id, f.created
}

// bothWays serves body from a fake upstream of kind and returns the answer a
// client gets of it read whole (NewChatBody) and forwarded (NewForwardBody,
// written straight, after a Prefetch that stops early, and after one that
// takes it all).
func bothWays(t *testing.T, kind fakeup.Kind, body []byte, f Format) (whole []byte, fwd map[string][]byte) {
	t.Helper()
	up, err := fakeup.Start(fakeup.Options{Kind: kind, Models: []string{"gemini-3-pro-image"}})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	up.SetFault(fakeup.Fault{Body: body})
	pc := config.Provider{Name: "reseller", Kind: config.KindOpenAI, BaseURL: up.URL(), APIKey: "k"}
	if kind == fakeup.Gemini {
		pc.Name, pc.Kind = "google", config.KindGemini
	}
	p, err := provider.New(pc, provider.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	parse := func() *provider.ChatRequest {
		req, err := ParseChatRequest([]byte(`{"model":"m","messages":[{"role":"user","content":"two panels"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		return req
	}
	res, err := p.Chat(context.Background(), parse(), "gemini-3-pro-image")
	if err != nil {
		t.Fatal(err)
	}
	created := res.Created
	a := &gateway.Answer{Result: res, Usage: usageFor(res.Usage, res.Images())}
	cb := NewChatBody(a, "rid", "m", f)
	whole, _ = io.ReadAll(cb)
	cb.Close()

	fwd = map[string][]byte{}
	for _, mode := range []string{"straight", "prefetch 100", "prefetch all"} {
		req := parse()
		req.Forward = true
		st, err := p.ChatStream(context.Background(), req, "gemini-3-pro-image")
		if err != nil {
			t.Fatal(err)
		}
		fe := &forwarded{st: st, created: created}
		done := 0
		b := NewForwardBody(fe, ForwardOptions{ReqID: "rid", Model: "m", Format: f, OnDone: func(s StreamSummary) {
			done++
			if s.Err != nil || s.ClientGone {
				t.Errorf("%s: ended with %+v", mode, s)
			}
		}})
		switch mode {
		case "prefetch 100":
			// An answer without image data is whole here already.
			if _, err := b.Prefetch(100); err != nil {
				t.Fatalf("%s: %v", mode, err)
			}
		case "prefetch all":
			if whole, err := b.Prefetch(64 << 20); err != nil || !whole {
				t.Fatalf("%s: whole %v, %v", mode, whole, err)
			}
		}
		n := b.Len()
		var out bytes.Buffer
		if _, err := b.WriteTo(&out); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		b.Close()
		if done != 1 || !fe.closed {
			t.Errorf("%s: OnDone ran %d times, answer closed %v", mode, done, fe.closed)
		}
		if mode == "prefetch all" && n != out.Len() {
			t.Errorf("Len %d, wrote %d", n, out.Len())
		}
		fwd[mode] = out.Bytes()
	}
	return whole, fwd
}

// TestForwardedAnswerIsByteForByteTheBufferedOne: whatever the answer (text,
// images, text around images, several images, none, a refusal) and the
// format, forwarding writes exactly the bytes the buffered answer had.
func TestForwardedAnswerIsByteForByteTheBufferedOne(t *testing.T) {
	big := fakeup.PNGBase64(300 << 10)
	bodies := map[string][]byte{
		"gemini image":        fakeup.Fixture("gemini/response_image.json"),
		"gemini two images":   fakeup.Fixture("gemini/response_two_images.json"),
		"gemini interleaved":  fakeup.Fixture("gemini/response_3pro_interleaved_jpeg.json"),
		"gemini text only":    fakeup.Fixture("gemini/response_text_only.json"),
		"gemini no image":     fakeup.Fixture("gemini/response_no_image.json"),
		"gemini safety":       fakeup.Fixture("gemini/response_image_safety.json"),
		"gemini blocked":      fakeup.Fixture("gemini/response_prompt_blocked.json"),
		"gemini large escape": []byte(`{"candidates":[{"content":{"parts":[{"text":"a \"cat\"\n"},{"inlineData":{"mimeType":"image/png","data":"` + strings.ReplaceAll(big, "/", `\/`) + `"},"thoughtSignature":"c2ln"},{"text":"more"},{"inlineData":{"mimeType":"image/png","data":"` + fakeup.NthPNGBase64(100, 1) + `"}}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2600,"candidatesTokensDetails":[{"modality":"IMAGE","tokenCount":2580}]}}`),
		"gemini two candidates": []byte(`{"candidates":[{"content":{"parts":[{"text":"no"}]},"finishReason":"SAFETY","index":0},` +
			`{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"` + big + `"}}]},"finishReason":"STOP","index":1}]}`),
	}
	resellers := map[string][]byte{
		"reseller markdown": fakeup.Fixture("openai/response_chat_markdown_image.json"),
	}
	for _, f := range []Format{FormatMarkdown, FormatDataURL} {
		for name, body := range bodies {
			check(t, fmt.Sprintf("%s, format %d", name, f), fakeup.Gemini, body, f)
		}
		for name, body := range resellers {
			check(t, fmt.Sprintf("%s, format %d", name, f), fakeup.OpenAI, body, f)
		}
	}
}

func check(t *testing.T, name string, kind fakeup.Kind, body []byte, f Format) {
	t.Helper()
	whole, fwd := bothWays(t, kind, body, f)
	if !json.Valid(whole) {
		t.Fatalf("%s: the buffered answer is not JSON: %.300s", name, whole)
	}
	for mode, got := range fwd {
		if !bytes.Equal(got, whole) {
			i := 0
			for i < len(got) && i < len(whole) && got[i] == whole[i] {
				i++
			}
			t.Errorf("%s, %s: differs at byte %d:\n got %.200q\nwant %.200q", name, mode, i, got[max(i-60, 0):], whole[max(i-60, 0):])
		}
	}
}

// failing is an answer that breaks after its first window.
type failing struct {
	evs []provider.Event
	i   int
}

func (f *failing) Next() (*provider.Event, error) {
	if f.i >= len(f.evs) {
		return nil, errors.New("upstream connection dropped")
	}
	f.i++
	return &f.evs[f.i-1], nil
}
func (f *failing) Usage() gateway.Usage     { return gateway.Usage{} }
func (f *failing) PromptImageTokens() int64 { return 0 }
func (f *failing) Close()                   {}
func (f *failing) Head() (string, int64)    { return "", 1 }

// TestBrokenForwardNeverEndsItsJSON: an answer that breaks half-way writes
// what it had, returns an error (the connection closes without the last
// chunk) and never the JSON's end, so no client parses it as whole.
func TestBrokenForwardNeverEndsItsJSON(t *testing.T) {
	fa := &failing{evs: []provider.Event{
		{Piece: &provider.ImagePiece{Step: provider.ImageBegin, MIME: "image/png"}},
		{Piece: &provider.ImagePiece{Step: provider.ImageData, Data: []byte("iVBORw0KGgoAAAANSUhEUgAA")}},
	}}
	var sum StreamSummary
	b := NewForwardBody(fa, ForwardOptions{ReqID: "rid", Model: "m", OnDone: func(s StreamSummary) { sum = s }})
	var out bytes.Buffer
	if _, err := b.WriteTo(&out); err == nil {
		t.Fatal("WriteTo reported a broken answer as written")
	}
	if sum.Err == nil {
		t.Error("the summary does not carry the failure")
	}
	if json.Valid(out.Bytes()) || !strings.HasSuffix(out.String(), "iVBORw0KGgoAAAANSUhEUgAA") {
		t.Errorf("wrote %q", out.String())
	}
}

// brokenWriter fails every write: a client that left.
type brokenWriter struct{}

func (brokenWriter) Write([]byte) (int, error) { return 0, errors.New("connection reset") }

// TestForwardToAGoneClient: a client that left ends the relay at the
// first image window, reported as gone, the answer closed once.
func TestForwardToAGoneClient(t *testing.T) {
	fa := &failing{evs: []provider.Event{
		{Piece: &provider.ImagePiece{Step: provider.ImageBegin, MIME: "image/png"}},
		{Piece: &provider.ImagePiece{Step: provider.ImageData, Data: []byte("iVBORw0KGgoAAAANSUhEUgAA")}},
	}}
	runs := 0
	var sum StreamSummary
	b := NewForwardBody(fa, ForwardOptions{ReqID: "rid", Model: "m", OnDone: func(s StreamSummary) { sum = s; runs++ }})
	if _, err := b.WriteTo(brokenWriter{}); err == nil {
		t.Fatal("WriteTo reported the answer written")
	}
	b.Close()
	if runs != 1 || !sum.ClientGone || sum.Err != nil {
		t.Errorf("OnDone ran %d times with %+v", runs, sum)
	}
}
