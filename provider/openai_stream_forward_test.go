package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"nanogate/internal/fakeup"
)

// oaBufferedStream and oaForwardedStream read a reseller's SSE body in the
// two modes.
func oaBufferedStream(p *OpenAI, r io.Reader) (string, error) {
	s := &openaiStream{p: p, eventStream: eventStream{sse: getSSEReader(r, p.opts.MaxBodyBytes)}}
	defer s.Close()
	return describeStream(s)
}

func oaForwardedStream(p *OpenAI, r io.Reader) (string, error) {
	s := p.newStreamForward(nil, r)
	defer s.Close()
	return describeStream(s)
}

// oaChunk is a chat.completion.chunk with one choice: delta (a JSON
// object) and finish ("" for null).
func oaChunk(delta, finish string) string {
	f := "null"
	if finish != "" {
		f = `"` + finish + `"`
	}
	return `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1756195512,"model":"m","choices":[{"index":0,` +
		`"delta":` + delta + `,"logprobs":null,"finish_reason":` + f + `}],"usage":null}`
}

// oaContent is a delta with content s (JSON-escaped as a reseller does,
// "/" left as it is unless the caller escaped it).
func oaContent(s string) string {
	b, _ := json.Marshal(s)
	b = bytes.ReplaceAll(b, []byte(`\\/`), []byte(`\/`))
	return `{"content":` + string(b) + `}`
}

// oaImages is a delta with data-URL images in images[].
func oaImages(b64s ...string) string {
	parts := make([]string, len(b64s))
	for i, b := range b64s {
		parts[i] = `{"type":"image_url","image_url":{"url":"data:image/png;base64,` + b + `"}}`
	}
	return `{"images":[` + strings.Join(parts, ",") + `]}`
}

const oaUsageChunk = `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1756195512,"model":"m","choices":[],` +
	`"usage":{"prompt_tokens":540,"completion_tokens":1298,"total_tokens":1838}}`

// oaSSE frames chunks as a reseller's events, the usage and [DONE] last.
func oaSSE(chunks ...string) []byte {
	var b strings.Builder
	for _, c := range append(chunks, oaUsageChunk, "[DONE]") {
		b.WriteString("data: " + c + "\n\n")
	}
	return []byte(b.String())
}

// oaStreamInputs are reseller streams both readings must agree on.
func oaStreamInputs() map[string][]byte {
	big := fakeup.PNGBase64(1500 << 10)
	mid := fakeup.NthPNGBase64(300<<10, 1)
	small := fakeup.PNGBase64(100)
	fixture := fakeup.Fixture("openai/stream_chat.sse")
	role := oaChunk(`{"role":"assistant","content":""}`, "")
	stop := oaChunk(`{}`, "stop")
	in := map[string][]byte{
		"fixture":                           fixture,
		"fixture crlf":                      bytes.ReplaceAll(fixture, []byte("\n"), []byte("\r\n")),
		"text then a large markdown image":  oaSSE(role, oaChunk(oaContent("Here is the cat."), ""), oaChunk(oaContent("\n\n"+md(big)), ""), stop),
		"text around an image in one event": oaSSE(oaChunk(oaContent("before "+md(mid)+" after!"), ""), stop),
		"images style":                      oaSSE(role, oaChunk(oaContent("Here:"), ""), oaChunk(oaImages(big), ""), stop),
		"images style, url as a string":     oaSSE(oaChunk(`{"images":[{"type":"image_url","image_url":"data:image/png;base64,`+mid+`"}]}`, "stop")),
		"several images": oaSSE(oaChunk(oaContent("two: "+md(mid)), ""), oaChunk(oaImages(small, big), ""),
			oaChunk(oaContent("\n\n"+md(small)+" between "+md(big)+" end"), ""), stop),
		"image split across events": oaSSE(oaChunk(oaContent("look ![image](data:image/png;base64,"+big[:400<<10]), ""),
			oaChunk(oaContent(big[400<<10:900<<10]), ""), oaChunk(oaContent(""), ""), oaChunk(oaContent(big[900<<10:]+") done"), ""), stop),
		"small image split across events": oaSSE(oaChunk(oaContent("![image](data:image/png;base64,"+small[:10]), ""),
			oaChunk(oaContent(small[10:]+")"), "stop")),
		"markup split across events": oaSSE(oaChunk(oaContent("hello ![ima"), ""), oaChunk(oaContent("ge](data:image/png;base6"), ""),
			oaChunk(oaContent("4,"+mid+")"), ""), oaChunk(oaContent(" bye"), ""), stop),
		"escaped slashes":               oaSSE(oaChunk(oaContent(strings.ReplaceAll(md(mid), "/", `\/`)), ""), stop),
		"escaped slashes, images style": oaSSE(oaChunk(strings.ReplaceAll(oaImages(mid), "/", `\/`), ""), stop),
		"hosted link":                   oaSSE(oaChunk(oaContent("![image](https://cdn.example/a.png) and "+md(small)), ""), stop),
		"bang and brackets":             oaSSE(oaChunk(oaContent("wow! [x](y) ![alt](nope) !"), ""), oaChunk(oaContent("[z]"), ""), stop),
		"finish in the image event":     oaSSE(oaChunk(oaContent(md(big)), "stop")),
		"no done":                       []byte("data: " + oaChunk(oaContent(md(mid)), "stop") + "\n\n"),
		"two choices": oaSSE(`{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}`,
			`{"choices":[{"index":0,"delta":{"content":"`+md(small)+`"},"finish_reason":"stop"},{"index":1,"delta":{},"finish_reason":"stop"}]}`),
		"content parts ignored": oaSSE(oaChunk(`{"content":[{"type":"text","text":"x"}]}`, ""), oaChunk(oaContent("y"), "stop")),
		"framing": []byte(": keep-alive\n\nevent: message\nid: 1\ndata: " + oaChunk(oaContent("a"), "") + "\n\n" +
			"data: {\"choices\":[{\"delta\":{\"content\":\"" + md(mid) + "\"},\r\ndata: \"finish_reason\":\"stop\"}]}\r\n\r\ndata: [DONE]\n\n"),
		"data after done": append(oaSSE(oaChunk(oaContent("x"), "stop")), "data: garbage\n\n"...),
	}
	return in
}

func TestOpenAIStreamForwardMatchesBuffered(t *testing.T) {
	p := testOpenAI(t, "")
	for name, body := range oaStreamInputs() {
		want, err := oaBufferedStream(p, bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%s: buffered: %v", name, err)
		}
		if name != "bang and brackets" && name != "content parts ignored" && name != "data after done" && !strings.Contains(want, "[image") {
			t.Fatalf("%s: no image in %.200q", name, want)
		}
		for rname, r := range readers(body) {
			got, err := oaForwardedStream(p, r)
			if err != nil {
				t.Errorf("%s, %s: %v", name, rname, err)
				continue
			}
			sameOrDiff(t, name+", "+rname, got, want)
		}
	}
}

// TestOpenAIStreamForwardFailsAsBuffered: a stream that breaks fails the
// same way in both readings, after the same events (the forwarded one may
// have begun the image it broke in).
func TestOpenAIStreamForwardFailsAsBuffered(t *testing.T) {
	p := testOpenAI(t, "")
	capped := testOpenAI(t, "")
	capped.opts.MaxBodyBytes = 256 << 10
	big := fakeup.PNGBase64(1 << 20)
	text := oaChunk(oaContent("Here is"), "")
	imageBody := oaSSE(text, oaChunk(oaContent(md(big)), "stop"))
	cut := imageBody[:len(imageBody)/2]
	hostile := pngHeaderB64(20000, 20000) + strings.Repeat("A", 400<<10)
	cases := []struct {
		name    string
		p       *OpenAI
		body    []byte
		dropped bool // the body ends in io.ErrUnexpectedEOF
		// refusal: the messages may differ (the forwarded reading says why
		// it refused the image); the kinds may not.
		refusal bool
	}{
		{name: "cut mid-image", p: p, body: cut},
		{name: "cut mid-image, images style", p: p, body: oaSSE(oaChunk(oaImages(big), "stop"))[:600<<10]},
		{name: "dropped mid-image", p: p, body: cut, dropped: true},
		{name: "dropped between events", p: p, body: oaSSE(text)[:len(text)+8], dropped: true},
		{name: "error event after text", p: p, body: oaSSE(text, `{"error":{"message":"overloaded","type":"server_error","code":"503"}}`)},
		{name: "error event first", p: p, body: oaSSE(`{"error":{"message":"quota","type":"insufficient_quota"}}`)},
		{name: "event over the cap", p: capped, body: oaSSE(text, oaChunk(oaContent(md(big)), "stop"))},
		{name: "event over the cap, images style", p: capped, body: oaSSE(text, oaChunk(oaImages(big), "stop"))},
		{name: "hostile header", p: p, body: oaSSE(oaChunk(oaContent(md(hostile)), "stop")), refusal: true},
		{name: "hostile header after text", p: p, body: oaSSE(text, oaChunk(oaImages(hostile), "stop")), refusal: true},
		{name: "bad base64", p: p, body: oaSSE(oaChunk(oaContent(md(big[:4000]+"@@@@")), "stop")), refusal: true},
		{name: "bad base64, images style", p: p, body: oaSSE(oaChunk(oaImages(big[:4000]+"@@@@"), "stop")), refusal: true},
		{name: "image never closed", p: p, body: oaSSE(oaChunk(oaContent("![image](data:image/png;base64,"+big[:300<<10]), ""), oaChunk(`{}`, "stop")), refusal: true},
		{name: "image never closed, no finish", p: p, body: []byte("data: " + oaChunk(oaContent("![image](data:image/png;base64,"+big[:300<<10]), "") + "\n\ndata: [DONE]\n\n")},
		{name: "hostile header split across events", p: p, body: oaSSE(oaChunk(oaContent("![image](data:image/png;base64,"+hostile[:20]), ""),
			oaChunk(oaContent(hostile[20:]+")"), "stop")), refusal: true},
		{name: "no finish reason", p: p, body: []byte("data: " + text + "\n\n")},
		{name: "garbage", p: p, body: []byte("data: <html>\n\n")},
		{name: "empty data", p: p, body: []byte("data:\n\n")},
		{name: "trailing data", p: p, body: []byte("data: {} x\n\n"), refusal: true},
		{name: "empty body", p: p, body: nil},
		{name: "index out of range", p: p, body: oaSSE(`{"choices":[{"index":9,"delta":{"content":"a"}}]}`)},
		{name: "nine choices", p: p, body: oaSSE(`{"choices":[` + strings.Repeat(`{"delta":{"content":"a"}},`, 8) + `{"delta":{"content":"a"}}]}`)},
	}
	for _, c := range cases {
		bodyOf := func() io.Reader {
			if c.dropped {
				return io.MultiReader(bytes.NewReader(c.body), iotest.ErrReader(io.ErrUnexpectedEOF))
			}
			return bytes.NewReader(c.body)
		}
		want, werr := oaBufferedStream(c.p, bodyOf())
		got, gerr := oaForwardedStream(c.p, bodyOf())
		sameFailure(t, c.name, c.refusal, got, gerr, want, werr)
	}
}

// TestOpenAIStreamForwardFirstEvent: the first event is what the router
// reads before it commits; a stream refused before it fails over, one
// broken after it ends with an error.
func TestOpenAIStreamForwardFirstEvent(t *testing.T) {
	p := testOpenAI(t, "")
	big := fakeup.PNGBase64(1 << 20)
	hostile := oaSSE(oaChunk(oaContent("![image](data:image/png;base64,"+pngHeaderB64(20000, 20000)+strings.Repeat("A", 400<<10)+")"), "stop"))
	failsOver(t, p.newStreamForward(nil, bytes.NewReader(hostile)))
	for _, delta := range []string{oaContent(md(big)), oaImages(big)} {
		body := oaSSE(oaChunk(delta, "stop"))
		cutAfterBegin(t, p.newStreamForward(nil, io.MultiReader(bytes.NewReader(body[:len(body)/2]), iotest.ErrReader(io.ErrUnexpectedEOF))))
	}
}

// TestOpenAIStreamForwardHoldsAWindow: the windows handed out are bounded
// whatever the image's size, and neither the SSE reader nor the skeleton
// holds the event, in each shape of image.
func TestOpenAIStreamForwardHoldsAWindow(t *testing.T) {
	p := testOpenAI(t, "")
	big := fakeup.PNGBase64(1500 << 10)
	for name, delta := range map[string]string{"markdown": oaContent("hi " + md(big)), "images": oaImages(big)} {
		body := oaSSE(oaChunk(oaContent("hi"), ""), oaChunk(delta, "stop"))
		s := p.newStreamForward(nil, bytes.NewReader(body))
		held := cap(s.sse.data) + cap(s.sse.line)
		windows, widest := 0, 0
		if _, err := describeStream(s, func(ev *Event) {
			if ev.Piece != nil && ev.Piece.Step == ImageData {
				windows, widest = windows+1, max(widest, len(ev.Piece.Data))
			}
		}); err != nil {
			t.Fatal(name, err)
		}
		if widest > forwardWindow || windows < 2<<20/forwardWindow {
			t.Errorf("%s: %d windows, the widest %d bytes", name, windows, widest)
		}
		if cap(s.skel) > 64<<10 || cap(s.sse.data)+cap(s.sse.line) != held {
			t.Errorf("%s: skeleton %d bytes, SSE buffers %d and %d", name, cap(s.skel), cap(s.sse.data), cap(s.sse.line))
		}
		s.Close()
	}
}

// TestOpenAIStreamForwardOverSockets reads the fake reseller's streams in
// both image styles over a real connection, forwarded and buffered.
func TestOpenAIStreamForwardOverSockets(t *testing.T) {
	srv, p := startReseller(t)
	for _, style := range []string{fakeup.StyleMarkdown, fakeup.StyleImages} {
		srv.SetResellerStyle(style)
		srv.SetImages(2)
		srv.SetImageSize(1200 << 10)
		read := func(forward bool) string {
			req := &ChatRequest{Raw: []byte(`{"model":"m","stream":true,"messages":[{"role":"user","content":"a cat"}]}`), ForwardStream: forward}
			st, err := p.ChatStream(context.Background(), req, "m")
			if err != nil {
				t.Fatal(style, err)
			}
			defer st.Close()
			if _, ok := st.(*openaiStreamForward); ok != forward {
				t.Fatalf("%s: forward %v, stream %T", style, forward, st)
			}
			got, err := describeStream(st)
			if err != nil {
				t.Fatal(style, err)
			}
			return got
		}
		want := read(false)
		if strings.Count(want, "[image 0 image/png") != 2 {
			t.Fatalf("%s: buffered %.300q", style, want)
		}
		sameOrDiff(t, style, read(true), want)
	}
}

// BenchmarkOpenAIStream reads a reseller's stream whose image event is a
// 1.5 MB image (2 MB of base64) on one line, in both reseller styles, into
// neutral events: buffered (openaiStream holds the event) or forwarded
// through the window.
//
//	go test ./provider/ -run '^$' -bench OpenAIStream -benchmem
func BenchmarkOpenAIStream(b *testing.B) {
	p := testOpenAI(b, "")
	img := fakeup.PNGBase64(benchImageSize)
	for _, style := range []struct{ name, delta string }{
		{"markdown", oaContent("\n\n" + md(img))},
		{"images", oaImages(img)},
	} {
		body := oaSSE(oaChunk(`{"role":"assistant","content":""}`, ""), oaChunk(oaContent("Here is the cat."), ""),
			oaChunk(style.delta, ""), oaChunk(`{}`, "stop"))
		r := bytes.NewReader(body)
		b.Run(style.name+"/buffered", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				r.Reset(body)
				s := &openaiStream{p: p, eventStream: eventStream{sse: getSSEReader(r, p.opts.MaxBodyBytes)}}
				drainOne(b, &asPieces{Stream: s})
				s.Close()
			}
		})
		b.Run(style.name+"/forwarded", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				r.Reset(body)
				s := p.newStreamForward(nil, r)
				drainOne(b, s)
				s.Close()
			}
		})
	}
}

// FuzzOpenAIStreamForward reads any body in both modes: the forwarded
// reading must end, and hand out what the buffered one does (a prefix of
// it when it refuses more), except where an event's layout is one the
// forwarded reading reads differently on purpose (a member named twice).
func FuzzOpenAIStreamForward(f *testing.F) {
	small, other := fakeup.PNGBase64(100), fakeup.NthPNGBase64(60, 1)
	f.Add(fakeup.Fixture("openai/stream_chat.sse"), uint16(7))
	f.Add(oaSSE(oaChunk(oaContent("a ![image](data:image/png;base64,"+small[:20]), ""), oaChunk(oaContent(small[20:]+") b"), ""),
		oaChunk(oaImages(strings.ReplaceAll(other, "/", `\/`)), "stop")), uint16(1))
	f.Add(oaSSE(oaChunk(oaContent("x ![im"), ""), oaChunk(oaContent("age](data:image/png;base64,"+other+")"), "stop")), uint16(4093))
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"!\"}}]}\n\ndata: {\"error\":{\"message\":\"x\"}}\n\n"), uint16(3))
	p := testOpenAI(f, "")
	f.Fuzz(func(t *testing.T, body []byte, chunk uint16) {
		want, werr := oaBufferedStream(p, bytes.NewReader(body))
		got, gerr := oaForwardedStream(p, &chunked{b: body, n: int(chunk%8192) + 1})
		readsAlike(t, body, got, gerr, want, werr)
	})
}

// TestOpenAIStreamForwardTimesOut: a stall longer than the caller's
// deadline ends a forwarded reseller stream as it ends a buffered one.
func TestOpenAIStreamForwardTimesOut(t *testing.T) {
	srv, p := startReseller(t)
	srv.SetImageSize(200 << 10)
	srv.SetFault(fakeup.Fault{StallMidStream: 10 * time.Second, Times: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	req := &ChatRequest{Raw: []byte(`{"model":"m","stream":true,"messages":[{"role":"user","content":"a cat"}]}`), ForwardStream: true}
	st, err := p.ChatStream(ctx, req, "m")
	if err != nil {
		t.Fatal(err)
	}
	endsInTimeout(t, st, srv)
}

// TestOpenAIStreamForwardOneImageAtATime: an image of one choice that
// begins while another's is held over events fails the stream (a limit
// of the forwarded reading; resellers answer one choice).
func TestOpenAIStreamForwardOneImageAtATime(t *testing.T) {
	p := testOpenAI(t, "")
	big := fakeup.PNGBase64(300 << 10)
	body := oaSSE(oaChunk(oaContent("![image](data:image/png;base64,"+big[:1000]), ""),
		`{"choices":[{"index":1,"delta":{"images":[{"image_url":{"url":"data:image/png;base64,`+big+`"}}]}}]}`,
		oaChunk(oaContent(big[1000:]+")"), "stop"))
	if _, err := oaBufferedStream(p, bytes.NewReader(body)); err != nil {
		t.Fatalf("buffered: %v", err)
	}
	_, err := oaForwardedStream(p, bytes.NewReader(body))
	if pe, ok := AsError(err); !ok || pe.Kind != KindInvalidResponse {
		t.Fatalf("forwarded: %v, want an invalid answer", err)
	}
}
