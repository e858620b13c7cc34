package provider

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"nanogate/internal/fakeup"
)

// describe drains st into a canonical text: what a renderer sees of an
// answer, images as their whole base64.
func describe(st Stream) (string, error) {
	var b strings.Builder
	for {
		ev, err := st.Next()
		if err == io.EOF {
			return b.String(), nil
		}
		if err != nil {
			return b.String(), err
		}
		switch {
		case ev.Piece != nil:
			switch ev.Piece.Step {
			case ImageBegin:
				fmt.Fprintf(&b, "[image %d %s ", ev.Choice, ev.Piece.MIME)
				if ev.Piece.URL != "" {
					fmt.Fprintf(&b, "url=%s", ev.Piece.URL)
				}
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
		default:
			fmt.Fprintf(&b, "[text %d %q]", ev.Choice, ev.Text)
		}
	}
}

// buffered is what the buffered reading of body hands out as events.
func buffered(t *testing.T, p *Gemini, body []byte) (string, error) {
	t.Helper()
	res, err := p.parseResult(body)
	if err != nil {
		return "", err
	}
	return describe(newResultStream(res, false))
}

func forwarded(p *Gemini, r io.Reader, req *ChatRequest) (string, error) {
	f := p.newForward(nil, r, req)
	defer f.Close()
	return describe(f)
}

// readers cut a body in every way a connection may: whole, one byte at a
// time (every window boundary falls on every byte), and odd sizes.
func readers(body []byte) map[string]io.Reader {
	return map[string]io.Reader{
		"whole":    bytes.NewReader(body),
		"one byte": iotest.OneByteReader(bytes.NewReader(body)),
		"7 bytes":  &chunked{b: body, n: 7},
		"4093":     &chunked{b: body, n: 4093},
		"half":     iotest.HalfReader(bytes.NewReader(body)),
	}
}

// chunked reads n bytes at a time.
type chunked struct {
	b []byte
	n int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[k:]
	return k, nil
}

// imageAnswer is a compact Gemini answer: text, then each image, each with
// a signature.
func imageAnswer(text string, images ...string) []byte {
	var b strings.Builder
	b.WriteString(`{"candidates":[{"content":{"parts":[`)
	if text != "" {
		fmt.Fprintf(&b, `{"text":%q},`, text)
	}
	for i, img := range images {
		fmt.Fprintf(&b, `{"inlineData":{"mimeType":"image/png","data":"%s"},"thoughtSignature":"c2ln%d"},`, img, i)
	}
	s := strings.TrimSuffix(b.String(), ",")
	return []byte(s + `],"role":"model"},"finishReason":"STOP","index":0}],` +
		`"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":1300,"candidatesTokensDetails":[{"modality":"IMAGE","tokenCount":1290}]},` +
		`"responseId":"r1"}`)
}

func TestForwardMatchesBuffered(t *testing.T) {
	p := testGemini(t, "", nil)
	inputs := responseInputs(t)
	inputs["3pro_interleaved"] = fakeup.Fixture("gemini/response_3pro_interleaved_jpeg.json")
	big := fakeup.PNGBase64(300 << 10)
	inputs["large compact"] = imageAnswer("a cat", big)
	inputs["large escaped slashes"] = imageAnswer("", strings.ReplaceAll(big, "/", `\/`), fakeup.NthPNGBase64(2000, 1))
	inputs["text after image"] = []byte(`{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"` +
		fakeup.PNGBase64(100) + `"}},{"text":"after \"it\""},{"text":""},{"thought":true,"text":"hmm"}]},"finishReason":"STOP"}]}`)
	inputs["thought image first"] = []byte(`{"candidates":[{"content":{"parts":[{"thought":true,"inlineData":{"mimeType":"image/png","data":"` +
		fakeup.PNGBase64(100) + `"}},{"inlineData":{"mimeType":"image/png","data":"` + fakeup.NthPNGBase64(100, 1) +
		`"}}]},"finishReason":"STOP"}]}`)
	inputs["two candidates, first without image"] = []byte(`{"candidates":[{"content":{"parts":[{"text":"no"}]},"finishReason":"SAFETY","index":0},` +
		`{"content":{"parts":[{"inlineData":{"mimeType":"image/webp","data":"` + fakeup.PNGBase64(100) + `"}}]},"finishReason":"STOP","index":1}]}`)
	for name, body := range inputs {
		want, err := buffered(t, p, body)
		if err != nil {
			t.Fatalf("%s: buffered: %v", name, err)
		}
		for rname, r := range readers(body) {
			got, err := forwarded(p, r, &ChatRequest{})
			if err != nil {
				t.Errorf("%s, %s: %v", name, rname, err)
				continue
			}
			if got != want {
				i := 0
				for i < len(got) && i < len(want) && got[i] == want[i] {
					i++
				}
				t.Errorf("%s, %s: differs at %d of %d/%d:\n got %.300s\nwant %.300s", name, rname, i, len(got), len(want), got[max(i-100, 0):], want[max(i-100, 0):])
			}
		}
	}
}

// firstErr is the error of the first Next: the one the router fails over on.
func firstErr(p *Gemini, body []byte) error {
	f := p.newForward(nil, bytes.NewReader(body), &ChatRequest{})
	defer f.Close()
	_, err := f.Next()
	return err
}

func TestForwardRefusesBeforeCommit(t *testing.T) {
	p := testGemini(t, "", nil)
	png := fakeup.PNGBase64(100)
	cases := map[string]string{
		"garbage":                 "<html>502</html>",
		"truncated text":          `{"candidates": [{"content": {"parts": [{"text": "hi"}`,
		"cut in the image":        `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"` + png[:len(png)-8],
		"bad base64":              `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"` + png[:40] + `!!!!"}}]}}]}`,
		"unicode escape":          `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"` + png[:40] + `\u0041AAA"}}]}}]}`,
		"escaped quote":           `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"` + png[:40] + `\"AAA"}}]}}]}`,
		"too much padding":        `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"` + png[:40] + `A==="}}]}}]}`,
		"cut after a small image": string(imageAnswer("hi", png)[:len(imageAnswer("hi", png))-20]),
		"empty image":             `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":""}}]}}]}`,
		"error in 200":            `{"error": {"code": 500, "message": "x"}}`,
		"no candidates":           `{"usageMetadata": {"promptTokenCount": 3}}`,
		"trailing data":           `{"candidates": [{"content": {"parts": [{"text": "hi"}]}}]} x`,
		"mismatched":              `{"candidates": [{"content": {"parts": [{"text": "hi"}}]}]}`,
		"deep":                    strings.Repeat("[", 100) + strings.Repeat("]", 100),
		"huge dimensions":         `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"` + pngHeaderB64(20000, 20000) + `"}}]}}]}`,
		"damaged header":          `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"` + base64.StdEncoding.EncodeToString([]byte("\x89PNG\r\n\x1a\n0000XXXX00000000000000000000")) + `"}}]}}]}`,
	}
	for name, body := range cases {
		err := firstErr(p, []byte(body))
		pe, ok := AsError(err)
		if !ok || !pe.Failover() {
			t.Errorf("%s: first Next err = %v, want a failover", name, err)
		}
	}
	// The buffered reading refuses the images the same way.
	for _, name := range []string{"huge dimensions", "damaged header"} {
		if _, err := p.parseResult([]byte(cases[name])); err == nil {
			t.Errorf("%s: the buffered reading accepts it", name)
		}
	}
}

// pngHeaderB64 is the base64 of a PNG's signature and IHDR declaring w x h.
func pngHeaderB64(w, h uint32) string {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 17)
	copy(ihdr, "IHDR")
	binary.BigEndian.PutUint32(ihdr[4:], w)
	binary.BigEndian.PutUint32(ihdr[8:], h)
	ihdr[12], ihdr[13] = 8, 2
	binary.Write(&b, binary.BigEndian, uint32(13))
	b.Write(ihdr)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(ihdr))
	return base64.StdEncoding.EncodeToString(b.Bytes())
}

// TestForwardFailsAfterCommit: once the first image is under way, a body
// that breaks ends the answer with an error, never a quiet EOF.
func TestForwardFailsAfterCommit(t *testing.T) {
	p := testGemini(t, "", nil)
	body := imageAnswer("hi", fakeup.PNGBase64(400<<10))
	for name, cut := range map[string]io.Reader{
		"dropped": io.MultiReader(bytes.NewReader(body[:len(body)/2]), iotest.ErrReader(io.ErrUnexpectedEOF)),
		"ended":   bytes.NewReader(body[:len(body)/2]),
		"garbage": io.MultiReader(bytes.NewReader(body[:len(body)/2]), strings.NewReader("!!!!")),
	} {
		f := p.newForward(nil, cut, &ChatRequest{})
		if _, err := f.Next(); err != nil {
			t.Fatalf("%s: first Next: %v", name, err)
		}
		var err error
		for err == nil {
			_, err = f.Next()
		}
		if err == io.EOF {
			t.Errorf("%s: the answer ended as if whole", name)
		}
		f.Close()
	}
}

func TestForwardBoundsTheBody(t *testing.T) {
	p := testGemini(t, "", nil)
	p.opts.MaxBodyBytes = 64 << 10
	body := imageAnswer("hi", fakeup.PNGBase64(400<<10))
	got, err := forwarded(p, bytes.NewReader(body), &ChatRequest{})
	if pe, ok := AsError(err); !ok || pe.Kind != KindInvalidResponse {
		t.Errorf("err = %v after %d bytes described", err, len(got))
	}
}

// TestForwardHoldsAWindow: the windows handed out are bounded whatever the
// image's size.
func TestForwardHoldsAWindow(t *testing.T) {
	p := testGemini(t, "", nil)
	body := imageAnswer("hi", fakeup.PNGBase64(1500<<10))
	f := p.newForward(nil, bytes.NewReader(body), &ChatRequest{})
	defer f.Close()
	windows := 0
	for {
		ev, err := f.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Piece != nil && ev.Piece.Step == ImageData {
			windows++
			if len(ev.Piece.Data) > forwardWindow {
				t.Fatalf("window of %d bytes", len(ev.Piece.Data))
			}
		}
	}
	if windows < 2<<20/forwardWindow {
		t.Errorf("%d windows for a 2 MB image", windows)
	}
	if cap(f.skel) > 64<<10 {
		t.Errorf("skeleton grew to %d bytes", cap(f.skel))
	}
}

func TestForwardDigest(t *testing.T) {
	p := testGemini(t, "", nil)
	img := fakeup.PNGBase64(200 << 10)
	want, _ := ImageDigest([]byte(img))
	for rname, r := range readers(imageAnswer("", strings.ReplaceAll(img, "/", `\/`))) {
		f := p.newForward(nil, r, &ChatRequest{ForwardDigest: true})
		var got *ImagePiece
		for {
			ev, err := f.Next()
			if err != nil {
				break
			}
			if ev.Piece != nil && ev.Piece.Step == ImageEnd {
				got = ev.Piece
			}
		}
		f.Close()
		if got == nil || !got.Digested || got.Digest != want || string(got.Signature) != "c2ln0" {
			t.Errorf("%s: image end %+v", rname, got)
		}
	}
}
