package provider

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"nanogate/internal/fakeup"
	"nanogate/internal/poll"
)

// describeStream drains st into describe's canonical text, in which an
// image reads the same whether it came whole (Event.Image) or in windows
// (Event.Piece): what a client is shown of the stream. each, if not nil,
// sees every event.
func describeStream(st Stream, each ...func(*Event)) (string, error) {
	return describe(&asPieces{Stream: st, each: each})
}

// drainEvents reads st to its end, each seeing every event, and counts
// them.
func drainEvents(st Stream, each func(*Event)) (int, error) {
	for n := 0; ; n++ {
		ev, err := st.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		each(ev)
	}
}

// asPieces hands a stream's events on with each whole image as the pieces
// of a forwarded one and refusals marked in their text. A stream that
// does not end fails.
type asPieces struct {
	Stream
	each []func(*Event)
	rest []Event
	n    int
}

// Next implements Stream.
func (a *asPieces) Next() (*Event, error) {
	if len(a.rest) > 0 {
		ev := &a.rest[0]
		a.rest = a.rest[1:]
		return ev, nil
	}
	ev, err := a.Stream.Next()
	if err != nil {
		return ev, err
	}
	if a.n++; a.n > 1<<20 {
		return nil, errors.New("the stream does not end")
	}
	for _, f := range a.each {
		f(ev)
	}
	switch img := ev.Image; {
	case img != nil:
		a.rest = []Event{{Choice: ev.Choice, Piece: &ImagePiece{Step: ImageData, Data: img.B64}},
			{Choice: ev.Choice, Piece: &ImagePiece{Step: ImageEnd, Signature: img.Signature}}}
		if img.URL != "" {
			a.rest = a.rest[1:] // a link has no data
		}
		return &Event{Choice: ev.Choice, Piece: &ImagePiece{Step: ImageBegin, MIME: img.MIME, URL: img.URL}}, nil
	case ev.Refusal:
		return &Event{Choice: ev.Choice, Text: append([]byte("(refusal) "), ev.Text...)}, nil
	}
	return ev, nil
}

// bufferedStream and forwardedStream read an SSE body in the two modes.
func bufferedStream(p *Gemini, r io.Reader, req *ChatRequest) (string, error) {
	s := p.newStream(nil, r)
	s.wantImages = wantsImages(req)
	defer s.Close()
	return describeStream(s)
}

func forwardedStream(p *Gemini, r io.Reader, req *ChatRequest) (string, error) {
	s := p.newStreamForward(nil, r, req)
	defer s.Close()
	return describeStream(s)
}

// sse frames JSON objects as Google's events.
func sse(objs ...string) []byte {
	var b strings.Builder
	for _, o := range objs {
		b.WriteString("data: " + o + "\r\n\r\n")
	}
	return []byte(b.String())
}

// imageEvent is a stream event with one candidate holding parts.
func gEvent(finish string, parts ...string) string {
	f := ""
	if finish != "" {
		f = `,"finishReason":"` + finish + `"`
	}
	return `{"candidates":[{"content":{"parts":[` + strings.Join(parts, ",") + `],"role":"model"}` + f + `,"index":0}],` +
		`"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":1302,"candidatesTokensDetails":[{"modality":"IMAGE","tokenCount":1290}]},"responseId":"r"}`
}

func gTextPart(s string) string { return fmt.Sprintf(`{"text":%q}`, s) }

func gImagePart(b64, sig string) string {
	p := `{"inlineData":{"mimeType":"image/png","data":"` + b64 + `"}`
	if sig != "" {
		p += `,"thoughtSignature":"` + sig + `"`
	}
	return p + "}"
}

// streamInputs are streams both readings must agree on.
func streamInputs() map[string][]byte {
	big := fakeup.PNGBase64(1500 << 10)
	mid := fakeup.NthPNGBase64(300<<10, 1)
	small := fakeup.PNGBase64(100)
	fixture := fakeup.Fixture("gemini/stream_image.sse")
	in := map[string][]byte{
		"fixture":    fixture,
		"fixture lf": bytes.ReplaceAll(fixture, []byte("\r\n"), []byte("\n")),
		"text then a large image": sse(gEvent("", gTextPart("Here is")), gEvent("", gTextPart(" a cat"))+"",
			gEvent("STOP", gImagePart(big, "c2lnMA=="))),
		"several images": sse(gEvent("", gTextPart("two:")), gEvent("", gImagePart(mid, "")),
			gEvent("", gImagePart(small, "c2ln"), gTextPart("between"), gImagePart(big, "")),
			gEvent("STOP", gTextPart("done"))),
		"escaped slashes": sse(gEvent("STOP", gImagePart(strings.ReplaceAll(mid, "/", `\/`), "YS9i"))),
		"thought parts": sse(`{"candidates":[{"content":{"parts":[{"text":"thinking","thought":true}]},"index":0}]}`,
			gEvent("", `{"thought":true,"inlineData":{"mimeType":"image/png","data":"`+mid+`"}}`),
			gEvent("STOP", gTextPart("final"), gImagePart(fakeup.NthPNGBase64(300<<10, 2), "c2lnbmF0dXJl"))),
		"image safety": sse(gEvent("", gTextPart("Sure")),
			`{"candidates":[{"content":{"role":"model"},"finishReason":"IMAGE_SAFETY","finishMessage":"blocked \"it\"","index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":1}}`),
		"no image":       sse(`{"candidates":[{"finishReason":"NO_IMAGE","index":0}],"usageMetadata":{"promptTokenCount":9}}`),
		"prompt blocked": sse(`{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"no"},"usageMetadata":{"promptTokenCount":4}}`),
		"framing": []byte(": keep-alive\n\nevent: message\nid: 1\ndata: " + gEvent("", gTextPart("a")) + "\n\n" +
			"data: {\"candidates\":[{\"content\":{\"parts\":[{\"inlineData\":\r\ndata: {\"mimeType\":\"image/png\",\"data\":\"" + mid +
			"\"}}]},\r\nretry: 10\r\ndata: \"finishReason\":\"STOP\"}]}\r\n\r\n\r\n"),
		"no blank line at the end": []byte("data: " + gEvent("STOP", gImagePart(mid, "")) + "\n"),
		"two candidates": sse(`{"candidates":[{"content":{"parts":[{"text":"a"}]},"index":0},{"content":{"parts":[{"text":"b"}]},"index":1}]}`,
			`{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"`+small+`"}}]},"finishReason":"STOP","index":0},{"finishReason":"STOP","index":1}]}`),
	}
	// Google's answers, each as the one event of a stream, written over
	// several data lines.
	for _, name := range []string{"response_image", "response_two_images", "response_3pro_interleaved_jpeg", "response_text_only",
		"response_no_image", "response_image_safety", "response_prompt_blocked"} {
		body := fakeup.Fixture("gemini/" + name + ".json")
		lines := strings.Split(strings.TrimSpace(string(body)), "\n")
		in[name] = []byte("data: " + strings.Join(lines, "\ndata: ") + "\n\n")
	}
	return in
}

func sameOrDiff(t *testing.T, what, got, want string) {
	t.Helper()
	if got == want {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	t.Errorf("%s: differs at %d of %d/%d:\n got %.300q\nwant %.300q", what, i, len(got), len(want), got[max(i-100, 0):], want[max(i-100, 0):])
}

// textOnly is a request that asked for text only.
var textOnly = &ChatRequest{Params: []string{"modalities"}, Raw: []byte(`{"modalities":["text"]}`)}

func TestStreamForwardMatchesBuffered(t *testing.T) {
	p := testGemini(t, "", nil)
	for name, body := range streamInputs() {
		for _, req := range []*ChatRequest{{}, textOnly} {
			want, err := bufferedStream(p, bytes.NewReader(body), req)
			if err != nil {
				t.Fatalf("%s: buffered: %v", name, err)
			}
			for rname, r := range readers(body) {
				got, err := forwardedStream(p, r, req)
				if err != nil {
					t.Errorf("%s, %s: %v", name, rname, err)
					continue
				}
				sameOrDiff(t, name+", "+rname, got, want)
			}
		}
	}
}

// TestStreamForwardFailsAsBuffered: a stream that breaks fails the same
// way in both readings, after the same events (the forwarded one may have
// begun the image it broke in).
func TestStreamForwardFailsAsBuffered(t *testing.T) {
	p := testGemini(t, "", nil)
	capped := testGemini(t, "", nil)
	capped.opts.MaxBodyBytes = 256 << 10
	big := fakeup.PNGBase64(1 << 20)
	text := gEvent("", gTextPart("Here is"))
	imageBody := sse(text, gEvent("STOP", gImagePart(big, "c2ln")))
	cut := imageBody[:len(imageBody)/2]
	hostile := pngHeaderB64(20000, 20000) + strings.Repeat("A", 400<<10)
	cases := []struct {
		name string
		p    *Gemini
		body io.Reader
		// refusal: the messages may differ (the forwarded reading says
		// why it refused the image, or what its walk found wrong with the
		// JSON); the kinds may not.
		refusal bool
	}{
		{"cut mid-image", p, bytes.NewReader(cut), false},
		{"dropped mid-image", p, io.MultiReader(bytes.NewReader(cut), iotest.ErrReader(io.ErrUnexpectedEOF)), false},
		{"dropped between events", p, io.MultiReader(bytes.NewReader(sse(text)), iotest.ErrReader(io.ErrUnexpectedEOF)), false},
		{"cut in text", p, strings.NewReader(`data: {"candidates": [{"content": {"parts": [{"text": "hi`), false},
		{"cut in an escape", p, strings.NewReader(`data: {"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "` + big[:5000] + `\\`), false},
		{"error event after text", p, bytes.NewReader(sse(text, `{"error": {"code": 503,"message": "The model is overloaded.","status": "UNAVAILABLE"}}`)), false},
		{"error event 429", p, bytes.NewReader(sse(`{"error": {"code": 429,"message": "quota","status": "RESOURCE_EXHAUSTED","details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo","retryDelay": "7s"}]}}`)), false},
		{"event over the cap", capped, bytes.NewReader(sse(text, gEvent("STOP", gImagePart(big, "")))), false},
		{"hostile header first", p, bytes.NewReader(sse(gEvent("STOP", gImagePart(hostile, "")))), true},
		{"hostile header after text", p, bytes.NewReader(sse(text, gEvent("STOP", gImagePart(hostile, "")))), true},
		{"damaged header", p, bytes.NewReader(sse(gEvent("STOP", gImagePart(base64.StdEncoding.EncodeToString([]byte("\x89PNG\r\n\x1a\n0000XXXX00000000000000000000")), "")))), true},
		{"bad base64", p, bytes.NewReader(sse(gEvent("STOP", gImagePart(big[:4000]+"@@@@", "")))), false},
		{"no finish reason", p, bytes.NewReader(sse(text)), false},
		{"garbage", p, strings.NewReader("data: <html>\r\n\r\n"), false},
		{"empty data", p, strings.NewReader("data:\n\n"), false},
		{"trailing data", p, strings.NewReader("data: {} x\n\n"), true},
		{"bad literal", p, strings.NewReader(`data: {"candidates": [{"content": {"parts": [{"text": "hi"}]}, "index": nul}]}` + "\n\n"), false},
		{"empty body", p, strings.NewReader(""), false},
		{"index out of range", p, bytes.NewReader(sse(`{"candidates":[{"content":{"parts":[{"text":"a"}]},"index":9}]}`)), false},
	}
	for _, c := range cases {
		body, _ := io.ReadAll(c.body)
		bodyOf := func() io.Reader {
			if c.name == "dropped mid-image" || c.name == "dropped between events" {
				return io.MultiReader(bytes.NewReader(body), iotest.ErrReader(io.ErrUnexpectedEOF))
			}
			return bytes.NewReader(body)
		}
		want, werr := bufferedStream(c.p, bodyOf(), &ChatRequest{})
		got, gerr := forwardedStream(c.p, bodyOf(), &ChatRequest{})
		sameFailure(t, c.name, c.refusal, got, gerr, want, werr)
	}
}

// sameFailure checks that a forwarded stream (got, gerr) failed as its
// buffered reading (want, werr) did, after the same events. refusal: the
// messages may differ (the forwarded reading says why it refused the
// image, or what its walk found wrong with the JSON); the kinds may not.
func sameFailure(t *testing.T, name string, refusal bool, got string, gerr error, want string, werr error) {
	t.Helper()
	wpe, ok := AsError(werr)
	if !ok {
		t.Fatalf("%s: buffered err = %v", name, werr)
	}
	gpe, ok := AsError(gerr)
	if !ok || gpe.Kind != wpe.Kind || gpe.Status != wpe.Status || !refusal && gpe.Message != wpe.Message {
		t.Errorf("%s: forwarded err = %v, buffered %v", name, gerr, werr)
	}
	if !strings.HasPrefix(got, want) {
		t.Errorf("%s: forwarded %.200q, buffered %.200q", name, got, want)
	}
}

// TestStreamForwardFirstEvent: the first event is what the router reads
// before it commits; a stream refused before it fails over, one broken
// after it ends with an error.
func TestStreamForwardFirstEvent(t *testing.T) {
	p := testGemini(t, "", nil)
	big := fakeup.PNGBase64(1 << 20)
	hostile := sse(gEvent("STOP", gImagePart(pngHeaderB64(20000, 20000)+strings.Repeat("A", 400<<10), "")))
	failsOver(t, p.newStreamForward(nil, bytes.NewReader(hostile), &ChatRequest{}))
	body := sse(gEvent("STOP", gImagePart(big, "")))
	cutAfterBegin(t, p.newStreamForward(nil, bytes.NewReader(body[:len(body)/2]), &ChatRequest{}))
}

// failsOver checks that the first event of st fails over, and closes it.
func failsOver(t *testing.T, st Stream) {
	t.Helper()
	defer st.Close()
	if _, err := st.Next(); err == nil {
		t.Fatal("a hostile image header was handed on")
	} else if pe, ok := AsError(err); !ok || !pe.Failover() {
		t.Fatalf("first Next: %v, want a failover", err)
	}
}

// cutAfterBegin checks that st, cut mid-image, hands out the image's begin
// first, then windows, then the stream cut; and closes it.
func cutAfterBegin(t *testing.T, st Stream) {
	t.Helper()
	defer st.Close()
	ev, err := st.Next()
	if err != nil || ev.Piece == nil || ev.Piece.Step != ImageBegin || ev.Piece.MIME != "image/png" {
		t.Fatalf("first event %+v, %v: want the image's begin", ev, err)
	}
	windows := 0
	for err == nil {
		if ev, err = st.Next(); err == nil && ev.Piece != nil && ev.Piece.Step == ImageData {
			windows++
		}
	}
	if pe, ok := AsError(err); !ok || pe.Kind != KindTransport || windows == 0 {
		t.Fatalf("after %d windows: %v, want the stream cut", windows, err)
	}
}

// TestStreamForwardHoldsAWindow: the windows handed out are bounded
// whatever the image's size, and neither the SSE reader nor the skeleton
// holds the event.
func TestStreamForwardHoldsAWindow(t *testing.T) {
	p := testGemini(t, "", nil)
	body := sse(gEvent("", gTextPart("hi")), gEvent("STOP", gImagePart(fakeup.PNGBase64(1500<<10), "c2ln")))
	s := p.newStreamForward(nil, bytes.NewReader(body), &ChatRequest{})
	defer s.Close()
	// The SSE reader comes from a pool: its buffers are what an earlier
	// buffered stream left.
	held := cap(s.sse.data) + cap(s.sse.line)
	windows, widest := 0, 0
	if _, err := describeStream(s, func(ev *Event) {
		if ev.Piece != nil && ev.Piece.Step == ImageData {
			windows, widest = windows+1, max(widest, len(ev.Piece.Data))
		}
	}); err != nil {
		t.Fatal(err)
	}
	if widest > forwardWindow {
		t.Fatalf("window of %d bytes", widest)
	}
	if windows < 2<<20/forwardWindow {
		t.Errorf("%d windows for a 2 MB image", windows)
	}
	if cap(s.skel) > 64<<10 || cap(s.sse.data)+cap(s.sse.line) != held {
		t.Errorf("skeleton %d bytes, SSE buffers %d and %d", cap(s.skel), cap(s.sse.data), cap(s.sse.line))
	}
}

func TestStreamForwardDigest(t *testing.T) {
	p := testGemini(t, "", nil)
	imgs := []string{fakeup.PNGBase64(300 << 10), fakeup.NthPNGBase64(100, 1)}
	body := sse(gEvent("", gTextPart("two")), gEvent("", gImagePart(strings.ReplaceAll(imgs[0], "/", `\/`), "c2lnMA==")),
		gEvent("STOP", gImagePart(imgs[1], "")))
	for _, digest := range []bool{false, true} {
		for rname, r := range readers(body) {
			s := p.newStreamForward(nil, r, &ChatRequest{ForwardDigest: digest})
			var ends []ImagePiece
			describeStream(s, keepEnds(&ends))
			s.Close()
			if len(ends) != 2 || string(ends[0].Signature) != "c2lnMA==" || ends[1].Signature != nil {
				t.Fatalf("%s: image ends %+v", rname, ends)
			}
			for i, e := range ends {
				want, _ := ImageDigest([]byte(imgs[i]))
				if e.Digested != digest || digest && e.Digest != want {
					t.Errorf("%s, digest %v: image %d end %+v", rname, digest, i, e)
				}
			}
		}
	}
}

// keepEnds keeps a copy of each image end.
func keepEnds(ends *[]ImagePiece) func(*Event) {
	return func(ev *Event) {
		if ev.Piece != nil && ev.Piece.Step == ImageEnd {
			*ends = append(*ends, *ev.Piece)
		}
	}
}

// streamOverSocket runs a stream request against fakeup's Google and
// describes what it hands out.
func streamOverSocket(t *testing.T, p *Gemini, req *ChatRequest) (string, error) {
	t.Helper()
	st, err := p.ChatStream(context.Background(), req, testModel)
	if err != nil {
		return "", err
	}
	defer st.Close()
	return describeStream(st)
}

var anySig = regexp.MustCompile(`sig="[^"]+"`)

func TestGeminiStreamForwardOverSocket(t *testing.T) {
	s, p := startGoogle(t, nil)
	s.SetImageSize(1_500_000)
	s.SetImages(2)
	s.SetThoughtSignatures(true)
	outcomes := []string{fakeup.OutcomeImage, fakeup.OutcomeTextOnly, fakeup.OutcomeNoImage, fakeup.OutcomeImageSafety, fakeup.OutcomePromptBlocked}
	for _, outcome := range outcomes {
		s.SetOutcome(outcome)
		want, err := streamOverSocket(t, p, parse(t, drawBody))
		if err != nil {
			t.Fatalf("%s: buffered: %v", outcome, err)
		}
		req := parse(t, drawBody)
		req.ForwardStream, req.ForwardDigest = true, true
		got, err := streamOverSocket(t, p, req)
		if err != nil {
			t.Fatalf("%s: forwarded: %v", outcome, err)
		}
		// fakeup signs each answer's images afresh.
		sameOrDiff(t, outcome, anySig.ReplaceAllString(got, "sig"), anySig.ReplaceAllString(want, "sig"))
		if outcome == fakeup.OutcomeImage && strings.Count(got, "[image 0 image/png ") != 2 {
			t.Errorf("%s: %d images", outcome, strings.Count(got, "[image "))
		}
	}
	if path := s.LastPath(); path != "/v1beta/models/gemini-2.5-flash-image:streamGenerateContent?alt=sse" {
		t.Errorf("path %q", path)
	}

	// Signatures are kept with their images' digests.
	s.SetOutcome(fakeup.OutcomeImage)
	req := parse(t, drawBody)
	req.ForwardStream, req.ForwardDigest = true, true
	st, err := p.ChatStream(context.Background(), req, testModel)
	if err != nil {
		t.Fatal(err)
	}
	var ends []ImagePiece
	if _, err := describeStream(st, keepEnds(&ends)); err != nil {
		t.Fatal(err)
	}
	st.Close()
	sigs := s.LastSignatures()
	if len(ends) != 2 || len(sigs) != 2 {
		t.Fatalf("%d image ends, %d signatures sent", len(ends), len(sigs))
	}
	for i, e := range ends {
		want, _ := ImageDigest([]byte(fakeup.NthPNGBase64(1_500_000, i)))
		if !e.Digested || e.Digest != want || string(e.Signature) != sigs[i] {
			t.Errorf("image %d: end %+v, signature sent %q", i, e, sigs[i])
		}
	}
}

func TestGeminiStreamForwardCutOverSocket(t *testing.T) {
	s, p := startGoogle(t, nil)
	s.SetImageSize(1 << 20)
	s.SetFault(fakeup.Fault{DropMidBody: true})
	want, werr := streamOverSocket(t, p, parse(t, drawBody))
	req := parse(t, drawBody)
	req.ForwardStream = true
	got, gerr := streamOverSocket(t, p, req)
	wpe, _ := AsError(werr)
	gpe, ok := AsError(gerr)
	if !ok || wpe == nil || gpe.Kind != KindTransport || gpe.Message != wpe.Message {
		t.Fatalf("forwarded err = %v, buffered %v", gerr, werr)
	}
	// The text went out before the image began, and the image began.
	if !strings.HasPrefix(got, want) || !strings.Contains(got[len(want):], "[image 0 image/png iVBOR") {
		t.Fatalf("forwarded %.200q, buffered %.200q", got, want)
	}
}

// FuzzGeminiStreamForward reads any body in both modes: the forwarded
// reading must end, and hand out what the buffered one does (a prefix of
// it when it refuses more), except where the layout of the JSON is one
// that forwarding reads differently on purpose (layoutForwardsApart).
func FuzzGeminiStreamForward(f *testing.F) {
	f.Add(fakeup.Fixture("gemini/stream_image.sse"), uint16(7))
	small, other := fakeup.PNGBase64(100), fakeup.NthPNGBase64(60, 1)
	f.Add(sse(gEvent("", gTextPart("a")), gEvent("STOP", gImagePart(small, "c2ln"), gTextPart("b"), gImagePart(strings.ReplaceAll(other, "/", `\/`), ""))), uint16(1))
	f.Add(sse(`{"candidates":[{"content":{"parts":[{"thought":true,"inlineData":{"mimeType":"image/png","data":"`+small+`"}}]},"index":0}]}`,
		`{"candidates":[{"finishReason":"IMAGE_SAFETY","finishMessage":"x","index":0}],"usageMetadata":{"promptTokenCount":3}}`), uint16(4093))
	f.Add([]byte("data: {\"promptFeedback\": {\"blockReason\": \"SAFETY\"}}\r\n\r\ndata: {\"error\": {\"code\": 500}}"), uint16(3))
	f.Add([]byte(": c\n\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\\\"\\\\\"}, {\"inlineData\": \ndata: {\"mimeType\": \"image/png\", \"data\": \"QUJD\"}}]}, \"finishReason\": \"SAFETY\", \"index\": 1}]}\n\n"), uint16(2))
	p := testGemini(f, "", nil)
	f.Fuzz(func(t *testing.T, body []byte, chunk uint16) {
		want, werr := bufferedStream(p, bytes.NewReader(body), &ChatRequest{})
		got, gerr := forwardedStream(p, &chunked{b: body, n: int(chunk%8192) + 1}, &ChatRequest{})
		readsAlike(t, body, got, gerr, want, werr)
	})
}

// readsAlike checks the forwarded reading of a fuzzed stream body (got,
// gerr) against the buffered one (want, werr): the same events, or a
// prefix of them when the forwarded one refuses more, except where the
// layout of the JSON is one that forwarding reads differently on purpose
// (layoutForwardsApart). Its error is always an *Error.
func readsAlike(t *testing.T, body []byte, got string, gerr error, want string, werr error) {
	t.Helper()
	if gerr != nil {
		if _, ok := AsError(gerr); !ok {
			t.Fatalf("error is not an *Error: %v", gerr)
		}
	}
	if layoutForwardsApart(body) {
		return
	}
	switch {
	case werr == nil && gerr == nil:
		if got != want {
			t.Fatalf("forwarded %q\nbuffered %q", got, want)
		}
	case werr == nil:
		if !strings.HasPrefix(want, got) {
			t.Fatalf("forwarded %q (%v)\nbuffered %q", got, gerr, want)
		}
	case gerr == nil:
		t.Fatalf("forwarded %q\nbuffered %q (%v)", got, want, werr)
	}
}

// layoutForwardsApart reports whether an event of body has a layout the
// forwarded reading reads differently on purpose (gemini_forward.go,
// gemini_stream_forward.go): a member named twice in an object (the
// buffered reading keeps the last, the walk sees both), a part marked
// thought after its inlineData, an inlineData whose mimeType does not come
// before its data.
func layoutForwardsApart(body []byte) bool {
	r := newSSEReader(bytes.NewReader(body), 1<<30)
	for {
		data, err := r.Next()
		if err != nil {
			return false
		}
		if apart, _ := walkApart(json.NewDecoder(bytes.NewReader(data)), ""); apart {
			return true
		}
	}
}

// walkApart reads the value that comes next from d, key being its
// member's name; ok is false when d is not JSON.
func walkApart(d *json.Decoder, key string) (apart, ok bool) {
	tok, err := d.Token()
	if err != nil {
		return false, false
	}
	delim, isDelim := tok.(json.Delim)
	switch {
	case !isDelim:
		return false, true
	case delim == '[':
		for d.More() {
			if apart, ok := walkApart(d, ""); apart || !ok {
				return apart, ok
			}
		}
		_, err := d.Token()
		return false, err == nil
	}
	seen := map[string]bool{}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return false, false
		}
		k, _ := tok.(string)
		switch {
		case seen[k]:
			return true, true
		case k == "thought" && seen["inlineData"]:
			return true, true
		case k == "data" && key == "inlineData" && !seen["mimeType"]:
			return true, true
		}
		seen[k] = true
		if apart, ok := walkApart(d, k); apart || !ok {
			return apart, ok
		}
	}
	if key == "inlineData" && !seen["mimeType"] {
		return true, true
	}
	_, err = d.Token()
	return false, err == nil
}

// BenchmarkGeminiStreamForward is BenchmarkGeminiStream forwarded: the
// image event goes through in windows.
//
//	go test ./provider/ -run '^$' -bench GeminiStream -benchmem
func BenchmarkGeminiStreamForward(b *testing.B) {
	p := testGemini(b, "", nil)
	body := withImage("gemini/stream_image.sse", benchImageSize)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		s := p.newStreamForward(nil, bytes.NewReader(body), &ChatRequest{})
		var ends []ImagePiece
		if _, err := drainEvents(s, keepEnds(&ends)); err != nil || len(ends) != 1 {
			b.Fatal(err)
		}
		s.Close()
	}
}

// TestGeminiStreamForwardTimesOut: a stall longer than the caller's
// deadline ends a forwarded stream as it ends a buffered one.
func TestGeminiStreamForwardTimesOut(t *testing.T) {
	s, p := startGoogle(t, nil)
	s.SetImageSize(200 << 10)
	s.SetFault(fakeup.Fault{StallMidStream: 10 * time.Second, Times: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	req := parse(t, drawBody)
	req.ForwardStream = true
	st, err := p.ChatStream(ctx, req, testModel)
	if err != nil {
		t.Fatal(err)
	}
	endsInTimeout(t, st, s)
}

// endsInTimeout checks that st, stalled by upstream s past its deadline,
// hands out its text then ends with KindTimeout, and that s sees the call
// end.
func endsInTimeout(t *testing.T, st Stream, s *fakeup.Server) {
	t.Helper()
	got, err := describeStream(st)
	st.Close()
	if pe, ok := AsError(err); !ok || pe.Kind != KindTimeout || !strings.HasPrefix(got, "[text 0 ") {
		t.Fatalf("%q, err = %v, want the text then KindTimeout", got, err)
	}
	if !poll.Within(5*time.Second, func() bool { return s.Canceled() != 0 }) {
		t.Fatal("the upstream did not see the call end")
	}
}
