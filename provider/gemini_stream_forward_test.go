package provider

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"nanogate/internal/fakeup"
)

// describeStream drains st into a canonical text in which an image reads
// the same whether it came whole (Event.Image) or in windows
// (Event.Piece): what a client is shown of the stream.
func describeStream(st Stream) (string, error) {
	var b strings.Builder
	for i := 0; ; i++ {
		ev, err := st.Next()
		if err == io.EOF {
			return b.String(), nil
		}
		if err != nil {
			return b.String(), err
		}
		if i > 1<<20 {
			return b.String(), fmt.Errorf("the stream does not end")
		}
		switch {
		case ev.Image != nil:
			fmt.Fprintf(&b, "[image %d %s %s sig=%q]", ev.Choice, ev.Image.MIME, ev.Image.B64, ev.Image.Signature)
		case ev.Piece != nil:
			switch ev.Piece.Step {
			case ImageBegin:
				fmt.Fprintf(&b, "[image %d %s ", ev.Choice, ev.Piece.MIME)
			case ImageData:
				if len(ev.Piece.Data) == 0 {
					b.WriteString("(empty window)")
				}
				b.Write(ev.Piece.Data)
			case ImageEnd:
				fmt.Fprintf(&b, " sig=%q]", ev.Piece.Signature)
			}
		case ev.Usage != nil:
			fmt.Fprintf(&b, "[usage %+v]", *ev.Usage)
		case ev.FinishReason != "":
			fmt.Fprintf(&b, "[finish %d %s]", ev.Choice, ev.FinishReason)
		case ev.Text != nil:
			fmt.Fprintf(&b, "[text %d %q refusal=%v]", ev.Choice, ev.Text, ev.Refusal)
		default:
			b.WriteString("[empty event]")
		}
	}
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

// streamReaders cut a body as readers() does, with the sizes that fall on
// every boundary of the SSE and JSON windows.
func streamReaders(body []byte) map[string]io.Reader {
	return map[string]io.Reader{
		"whole":    bytes.NewReader(body),
		"one byte": iotest.OneByteReader(bytes.NewReader(body)),
		"7 bytes":  &chunked{b: body, n: 7},
		"4093":     &chunked{b: body, n: 4093},
	}
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
			for rname, r := range streamReaders(body) {
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
