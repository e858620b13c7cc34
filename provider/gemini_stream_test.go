package provider

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"nanogate/config"
	"nanogate/internal/fakeup"
	"nanogate/internal/jsonx"
	"nanogate/internal/poll"
	"nanogate/internal/safefetch"
)

const fakeKey = "AIzaFakeGoogleKey0123456789"

// drain reads a stream to its end and renders its events, one JSON object a
// line, for golden files and comparisons.
func drain(t testing.TB, s Stream) ([]byte, error) {
	t.Helper()
	defer s.Close()
	var b []byte
	for i := 0; i < 10000; i++ {
		ev, err := s.Next()
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		b = renderEvent(b, ev)
	}
	t.Fatal("stream does not end")
	return nil, nil
}

func renderEvent(b []byte, ev *Event) []byte {
	b = append(b, `{"choice":`...)
	b = strconv.AppendInt(b, int64(ev.Choice), 10)
	switch {
	case ev.Text != nil:
		b = append(b, `,"text":"`...)
		b = append(b, ev.Text...)
		b = append(b, '"')
	case ev.Image != nil:
		b = append(b, `,"image":{"mime":`...)
		b = jsonx.AppendString(b, ev.Image.MIME)
		b = append(b, `,"b64_bytes":`...)
		b = strconv.AppendInt(b, int64(len(ev.Image.B64)), 10)
		if len(ev.Image.B64) < 200 {
			b = append(b, `,"b64":"`...)
			b = append(b, ev.Image.B64...)
			b = append(b, '"')
		}
		b = append(b, '}')
	case ev.FinishReason != "":
		b = append(b, `,"finish_reason":`...)
		b = jsonx.AppendString(b, ev.FinishReason)
	case ev.Usage != nil:
		b = append(b, `,"usage":{"prompt_tokens":`...)
		b = strconv.AppendInt(b, ev.Usage.PromptTokens, 10)
		b = append(b, `,"text_tokens":`...)
		b = strconv.AppendInt(b, ev.Usage.TextTokens, 10)
		b = append(b, '}')
	}
	return append(b, "}\n"...)
}

// readerStream reads an SSE body from memory.
func readerStream(p *Gemini, body []byte) Stream {
	return p.newStream(nil, bytes.NewReader(body))
}

func TestGeminiStreamGolden(t *testing.T) {
	p := testGemini(t, "", nil)
	fixture := fakeup.Fixture("gemini/stream_image.sse")
	got, err := drain(t, readerStream(p, fixture))
	if err != nil {
		t.Fatal(err)
	}
	// Every line is a JSON object: text spans are valid string content.
	for _, line := range bytes.Split(bytes.TrimSpace(got), []byte("\n")) {
		if !jsonx.Valid(line) {
			t.Fatalf("event is not JSON: %s", line)
		}
	}
	golden(t, "testdata/gemini/stream/stream_image.golden.jsonl", got)

	// The same events whatever the line endings and the pace of the reads.
	lf := bytes.ReplaceAll(fixture, []byte("\r\n"), []byte("\n"))
	again, err := drain(t, p.newStream(nil, &oneByteReader{lf}))
	if err != nil || !bytes.Equal(again, got) {
		t.Fatalf("with \\n framing read a byte at a time: err %v\n%s", err, again)
	}
}

type oneByteReader struct{ b []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	p[0] = r.b[0]
	r.b = r.b[1:]
	return 1, nil
}

func TestGeminiStreamShapes(t *testing.T) {
	p := testGemini(t, "", nil)
	ev := func(s string) string { return "data: " + s + "\r\n\r\n" }
	tests := []struct {
		name, body string
		want       string // rendered events
		kind       ErrorKind
	}{
		{"no image", ev(`{"candidates": [{"finishReason": "NO_IMAGE","index": 0}],"usageMetadata": {"promptTokenCount": 9,"totalTokenCount": 9}}`),
			`{"choice":0,"text":"The model returned no image (NO_IMAGE)."}` + "\n" + `{"choice":0,"finish_reason":"content_filter"}` + "\n" +
				`{"choice":0,"usage":{"prompt_tokens":9,"text_tokens":0}}` + "\n", 0},
		{"text then image safety", ev(`{"candidates": [{"content": {"parts": [{"text": "Sure"}],"role": "model"},"index": 0}]}`) +
			ev(`{"candidates": [{"content": {"role": "model"},"finishReason": "IMAGE_SAFETY","finishMessage": "blocked","index": 0}],"usageMetadata": {"promptTokenCount": 5,"candidatesTokenCount": 1}}`),
			`{"choice":0,"text":"Sure"}` + "\n" + `{"choice":0,"text":"\n\nThe model returned no image (IMAGE_SAFETY). blocked"}` + "\n" +
				`{"choice":0,"finish_reason":"content_filter"}` + "\n" + `{"choice":0,"usage":{"prompt_tokens":5,"text_tokens":1}}` + "\n", 0},
		{"prompt blocked", ev(`{"promptFeedback": {"blockReason": "SAFETY"},"usageMetadata": {"promptTokenCount": 4}}`),
			`{"choice":0,"text":"The prompt was blocked (SAFETY)."}` + "\n" + `{"choice":0,"finish_reason":"content_filter"}` + "\n" +
				`{"choice":0,"usage":{"prompt_tokens":4,"text_tokens":0}}` + "\n", 0},
		{"two candidates", ev(`{"candidates": [{"content": {"parts": [{"text": "a"}]},"index": 0},{"content": {"parts": [{"text": "b"}]},"index": 1}]}`) +
			ev(`{"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png","data": "`+checkB64+`"}}]},"finishReason": "STOP","index": 1},{"finishReason": "STOP","index": 0}]}`),
			`{"choice":0,"text":"a"}` + "\n" + `{"choice":1,"text":"b"}` + "\n" +
				`{"choice":1,"image":{"mime":"image/png","b64_bytes":100,"b64":"` + checkB64 + `"}}` + "\n" + `{"choice":1,"finish_reason":"stop"}` + "\n" +
				`{"choice":0,"finish_reason":"stop"}` + "\n", 0},
		{"no finish reason", ev(`{"candidates": [{"content": {"parts": [{"text": "Here is"}]},"index": 0}]}`), "", KindTransport},
		{"cut inside an event", `data: {"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png","data": "iVBOR`, "", KindTransport},
		{"garbage", "data: <html>\r\n\r\n", "", KindInvalidResponse},
		{"error event", ev(`{"error": {"code": 503,"message": "The model is overloaded.","status": "UNAVAILABLE"}}`), "", KindServer},
		{"error event 429", ev(`{"error": {"code": 429,"message": "quota","status": "RESOURCE_EXHAUSTED","details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo","retryDelay": "7s"}]}}`), "", KindRateLimited},
		{"bad image", ev(`{"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png","data": "@@@@"}}]},"finishReason": "STOP"}]}`), "", KindInvalidResponse},
		{"empty body", "", "", KindTransport},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := drain(t, readerStream(p, []byte(tt.body)))
			if tt.kind != 0 {
				pe, ok := AsError(err)
				if !ok || pe.Kind != tt.kind {
					t.Fatalf("err = %v, want kind %d", err, tt.kind)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("events:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// startGoogle starts fakeup's Gemini server and a provider in front of it.
func startGoogle(t *testing.T, f ImageFetcher) (*fakeup.Server, *Gemini) {
	t.Helper()
	s, err := fakeup.Start(fakeup.Options{Kind: fakeup.Gemini, Key: fakeKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	p, err := NewGemini(config.Provider{Name: "google", Kind: "gemini", BaseURL: s.URL(), APIKey: fakeKey}, Options{Fetcher: f})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return s, p
}

func parse(t testing.TB, body string) *ChatRequest {
	t.Helper()
	r, err := ParseChatRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

const drawBody = `{"model":"gemini-2.5-flash-image-preview","messages":[{"role":"user","content":"draw a nano banana"}]}`

func TestGeminiChatOverSocket(t *testing.T) {
	s, p := startGoogle(t, nil)
	const size = 1_500_000
	s.SetImageSize(size)
	res, err := p.Chat(context.Background(), parse(t, drawBody), testModel)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	if len(res.Choices) != 1 || string(res.Choices[0].Text) != fakeup.Text || res.Images() != 1 || res.Choices[0].FinishReason != "stop" {
		t.Fatalf("result: %+v", res.Choices)
	}
	img := res.Choices[0].Images[0]
	if img.MIME != "image/png" || string(img.B64) != fakeup.PNGBase64(size) {
		t.Fatalf("image altered: %s, %d bytes", img.MIME, len(img.B64))
	}
	if res.Usage != (Usage{Reported: true, PromptTokens: 17, TextTokens: 14, ImageTokens: 1290, ImageTokensListed: true}) {
		t.Errorf("usage %+v", res.Usage)
	}
	if s.LastAuth() != fakeKey {
		t.Errorf("key header = %q", s.LastAuth())
	}
	if path := s.LastPath(); path != "/v1beta/models/gemini-2.5-flash-image:generateContent" || strings.Contains(path, fakeKey) {
		t.Errorf("path %q", path)
	}
}

func TestGeminiChatOutcomesOverSocket(t *testing.T) {
	s, p := startGoogle(t, nil)
	for outcome, want := range map[string]string{
		fakeup.OutcomeNoImage:       "The model returned no image (NO_IMAGE).",
		fakeup.OutcomeImageSafety:   "The model returned no image (IMAGE_SAFETY).",
		fakeup.OutcomePromptBlocked: "The prompt was blocked (PROHIBITED_CONTENT).",
	} {
		s.SetOutcome(outcome)
		for _, stream := range []bool{false, true} {
			var text, finish string
			var images int
			if stream {
				st, err := p.ChatStream(context.Background(), parse(t, drawBody), testModel)
				if err != nil {
					t.Fatal(err)
				}
				for {
					ev, err := st.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatalf("%s stream: %v", outcome, err)
					}
					text += string(ev.Text)
					finish += ev.FinishReason
					if ev.Image != nil {
						images++
					}
				}
				st.Close()
			} else {
				res, err := p.Chat(context.Background(), parse(t, drawBody), testModel)
				if err != nil {
					t.Fatalf("%s: %v", outcome, err)
				}
				text, finish, images = string(res.Choices[0].Text), res.Choices[0].FinishReason, res.Images()
				res.Release()
			}
			if text != want || finish != "content_filter" || images != 0 {
				t.Errorf("%s (stream %v): text %q finish %q images %d", outcome, stream, text, finish, images)
			}
		}
	}
}

func TestGeminiStreamOverSocket(t *testing.T) {
	s, p := startGoogle(t, nil)
	const size = 1_500_000
	s.SetImageSize(size)
	s.SetImages(2)
	st, err := p.ChatStream(context.Background(), parse(t, drawBody), testModel)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var text []byte
	var images [][]byte
	var finish string
	var usage *Usage
	for {
		ev, err := st.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case ev.Text != nil:
			text = append(text, ev.Text...)
		case ev.Image != nil:
			// Spans live until the next call: keep a copy.
			images = append(images, bytes.Clone(ev.Image.B64))
		case ev.FinishReason != "":
			finish = ev.FinishReason
		case ev.Usage != nil:
			u := *ev.Usage
			usage = &u
		}
	}
	if string(text) != fakeup.Text || finish != "stop" || len(images) != 2 {
		t.Fatalf("text %q finish %q images %d", text, finish, len(images))
	}
	for i, img := range images {
		if string(img) != fakeup.NthPNGBase64(size, i) {
			t.Fatalf("image %d altered", i)
		}
	}
	if usage == nil || *usage != (Usage{Reported: true, PromptTokens: 17, TextTokens: 14, ImageTokens: 2580, ImageTokensListed: true}) {
		t.Fatalf("usage %+v", usage)
	}
	if path := s.LastPath(); path != "/v1beta/models/gemini-2.5-flash-image:streamGenerateContent?alt=sse" {
		t.Errorf("path %q", path)
	}
}

func TestGeminiStreamTextOnlyOverSocket(t *testing.T) {
	s, p := startGoogle(t, nil)
	s.SetImages(0)
	st, err := p.ChatStream(context.Background(), parse(t, drawBody), testModel)
	if err != nil {
		t.Fatal(err)
	}
	got, err := drain(t, st)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"choice":0,"text":"Here is"}` + "\n" + `{"choice":0,"text":" your nano banana dish,"}` + "\n" +
		`{"choice":0,"text":" served Gemini-style."}` + "\n" + `{"choice":0,"finish_reason":"stop"}` + "\n" +
		`{"choice":0,"usage":{"prompt_tokens":17,"text_tokens":14}}` + "\n"
	if string(got) != want {
		t.Fatalf("events:\n%s", got)
	}
}

func TestGeminiStreamCutMidImage(t *testing.T) {
	s, p := startGoogle(t, nil)
	s.SetImageSize(1 << 20)
	s.SetFault(fakeup.Fault{DropMidBody: true})
	st, err := p.ChatStream(context.Background(), parse(t, drawBody), testModel)
	if err != nil {
		t.Fatal(err)
	}
	_, err = drain(t, st)
	pe, ok := AsError(err)
	if !ok || pe.Kind != KindTransport || !pe.Failover() {
		t.Fatalf("err = %v, want KindTransport", err)
	}
	// The non-stream call fails the same way.
	_, err = p.Chat(context.Background(), parse(t, drawBody), testModel)
	if pe, ok := AsError(err); !ok || pe.Kind != KindTransport {
		t.Fatalf("plain: err = %v, want KindTransport", err)
	}
}

func TestGeminiStreamStall(t *testing.T) {
	s, p := startGoogle(t, nil)
	s.SetImageSize(200 << 10)
	s.SetFault(fakeup.Fault{StallMidStream: 300 * time.Millisecond, Times: 1})
	st, err := p.ChatStream(context.Background(), parse(t, drawBody), testModel)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, err := drain(t, st)
	if err != nil || !bytes.Contains(got, []byte(`"finish_reason":"stop"`)) || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("a short stall: err %v after %v\n%s", err, time.Since(start), got)
	}

	// A stall longer than the caller's deadline ends the call, which the
	// upstream sees as a client gone.
	s.SetFault(fakeup.Fault{StallMidStream: 10 * time.Second, Times: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	st, err = p.ChatStream(ctx, parse(t, drawBody), testModel)
	if err != nil {
		t.Fatal(err)
	}
	_, err = drain(t, st)
	if pe, ok := AsError(err); !ok || pe.Kind != KindTimeout {
		t.Fatalf("err = %v, want KindTimeout", err)
	}
	if !poll.Within(5*time.Second, func() bool { return s.Canceled() != 0 }) || s.Canceled() != 1 {
		t.Fatalf("upstream saw %d cancellations", s.Canceled())
	}
}

func TestGeminiErrorsOverSocket(t *testing.T) {
	s, p := startGoogle(t, nil)
	tests := []struct {
		fault fakeup.Fault
		kind  ErrorKind
		retry time.Duration
	}{
		{fakeup.Fault{Status: 429}, KindRateLimited, 13 * time.Second},
		{fakeup.Fault{Prepay: true}, KindConfig, 0},
		{fakeup.Fault{Status: 500}, KindServer, 0},
		{fakeup.Fault{Status: 503}, KindServer, 0},
		{fakeup.Fault{Status: 400}, KindClient, 0},
		{fakeup.Fault{Garbage: true}, KindInvalidResponse, 0},
	}
	for _, tt := range tests {
		for _, stream := range []bool{false, true} {
			f := tt.fault
			f.Times = 1
			s.SetFault(f)
			var err error
			if stream {
				var st Stream
				st, err = p.ChatStream(context.Background(), parse(t, drawBody), testModel)
				if err == nil {
					_, err = drain(t, st)
				}
			} else {
				_, err = p.Chat(context.Background(), parse(t, drawBody), testModel)
			}
			pe, ok := AsError(err)
			if !ok || pe.Kind != tt.kind || pe.RetryAfter != tt.retry {
				t.Errorf("%+v (stream %v): err = %v", tt.fault, stream, err)
			}
		}
	}
	// A wrong key is 400 at Google, and the gateway's problem.
	bad, err := NewGemini(config.Provider{Name: "google", BaseURL: s.URL(), APIKey: "AIzaWrongKey000000000"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	_, err = bad.Chat(context.Background(), parse(t, drawBody), testModel)
	if pe, ok := AsError(err); !ok || pe.Kind != KindConfig || pe.Status != 400 || strings.Contains(pe.Message, "AIzaWrongKey") {
		t.Fatalf("wrong key: %v", err)
	}
	// An unknown model is a mapping mistake of the configuration.
	_, err = p.Chat(context.Background(), parse(t, drawBody), "gemini-2.5-flash-image-preview")
	if pe, ok := AsError(err); !ok || pe.Kind != KindConfig || pe.Status != 404 {
		t.Fatalf("unknown model: %v", err)
	}
}

// TestGeminiFetchesImageURLs runs the real fetcher: an image server (allowed
// as a public one would be) is fetched and its bytes reach Google; a URL on
// loopback is refused by default with a 400 before Google is called.
func TestGeminiFetchesImageURLs(t *testing.T) {
	imgSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(redPNG)
	}))
	defer imgSrv.Close()
	f := safefetch.New(safefetch.Options{AllowAddrs: []netip.AddrPort{netip.MustParseAddrPort(imgSrv.Listener.Addr().String())}})
	s, p := startGoogle(t, f)
	body := `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"edit"},{"type":"image_url","image_url":{"url":"` + imgSrv.URL + `/cat.png"}}]}]}`
	res, err := p.Chat(context.Background(), parse(t, body), testModel)
	if err != nil {
		t.Fatal(err)
	}
	res.Release()
	g, err := fakeup.ParseGeminiRequest(s.LastBody())
	if err != nil {
		t.Fatal(err)
	}
	if parts := g.Contents[0].Parts; len(parts) != 2 || !bytes.Equal(parts[1].Data, redPNG) || parts[1].MimeType != "image/png" {
		t.Fatalf("parts %+v", parts)
	}

	// The default fetcher refuses loopback.
	s.Reset()
	_, def := startGoogle(t, nil)
	_, err = def.Chat(context.Background(), parse(t, body), testModel)
	pe, ok := AsError(err)
	if !ok || pe.Kind != KindClient || pe.Status != 400 || pe.Param != "messages[0].content[1].image_url.url" || !strings.Contains(pe.Message, "not public") {
		t.Fatalf("err = %v, want a 400 refusing the address", err)
	}
	if s.Requests() != 0 {
		t.Fatalf("Google was called for a refused request")
	}
}

func TestGeminiCanceledFetchIsNotTheClientsFault(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer slow.Close()
	f := safefetch.New(safefetch.Options{AllowAddrs: []netip.AddrPort{netip.MustParseAddrPort(slow.Listener.Addr().String())}})
	_, p := startGoogle(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	body := `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"` + slow.URL + `/x.png"}}]}]}`
	_, err := p.Chat(ctx, parse(t, body), testModel)
	if pe, ok := AsError(err); !ok || pe.Kind != KindTimeout || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want KindTimeout", err)
	}
}
