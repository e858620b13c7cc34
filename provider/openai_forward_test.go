package provider

import (
	"bytes"
	"context"
	"encoding/base64"
	"image"
	"image/jpeg"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"nanogate/config"
	"nanogate/internal/fakeup"
)

func testOpenAI(t testing.TB, base string) *OpenAI {
	t.Helper()
	if base == "" {
		base = "http://127.0.0.1:9/v1"
	}
	p, err := NewOpenAI(config.Provider{Name: "laozhang", Kind: config.KindOpenAI, BaseURL: base, APIKey: "sk-test"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// oaBuffered is what the buffered reading of body hands out as events.
func oaBuffered(p *OpenAI, body []byte) (string, error) {
	res, err := p.parseResult(body)
	if err != nil {
		return "", err
	}
	return describe(newResultStream(res, false))
}

func oaForwarded(p *OpenAI, r io.Reader) (string, error) {
	f := p.newForward(nil, r)
	defer f.Close()
	return describe(f)
}

// oaAnswer is a chat.completion whose one choice has message (a JSON
// object's members).
func oaAnswer(message string) []byte {
	return []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1756195512,"model":"m","choices":[{"index":0,` +
		`"message":{"role":"assistant",` + message + `},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":540,"completion_tokens":1298,"total_tokens":1838}}`)
}

// jpegB64 is a small JPEG's base64.
func jpegB64() string {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, image.NewGray(image.Rect(0, 0, 8, 8)), nil); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(b.Bytes())
}

func md(b64 string) string { return "![image](data:image/png;base64," + b64 + ")" }

func part(url string) string {
	return `{"type":"image_url","image_url":{"url":"` + url + `"}}`
}

// oaInputs are answers in every shape resellers send, with small and large
// images.
func oaInputs() map[string][]byte {
	small, small2 := fakeup.PNGBase64(100), fakeup.NthPNGBase64(2000, 1)
	big, big2 := fakeup.PNGBase64(300<<10), fakeup.NthPNGBase64(1500<<10, 1)
	jpeg := jpegB64()
	fixture := fakeup.Fixture("openai/response_chat_markdown_image.json")
	return map[string][]byte{
		"fixture":                fixture,
		"fixture, large image":   bytes.Replace(fixture, []byte(redB64), []byte(big2), 1),
		"markdown, text around":  oaAnswer(`"content":"Here it is:\n\n` + md(big) + `\n\nAnd more \"text\"."`),
		"markdown, two images":   oaAnswer(`"content":"A\n` + md(small) + ` between ` + md(big) + `\n\n` + md(small2) + `"`),
		"markdown, escaped":      oaAnswer(`"content":"x ` + strings.ReplaceAll(md(big), "/", `\/`) + ` y"`),
		"markdown, image only":   oaAnswer(`"content":"` + md(big2) + `"`),
		"markdown, not an image": oaAnswer(`"content":"see ![x](data:text/plain;base64,QUJD) and ![y](http://a/b.png) ;base64, ](data:x;base64,"`),
		"markdown, link":         oaAnswer(`"content":"![image](https:\/\/cdn.example.com\/a.png?x=1\u0026y=2) then ` + md(big) + `"`),
		"markdown, alt spans":    oaAnswer(`"content":"![a ![b](data:image/png;base64,` + big + `) c ![!!] ![z](data:image\/jpeg;base64,` + jpeg + `)"`),
		"text only":              oaAnswer(`"content":"  just text \n"`),
		"null content":           oaAnswer(`"content":null`),
		"no content":             oaAnswer(`"refusal":"no"`),
		"parts": oaAnswer(`"content":[{"type":"text","text":"one"},` + part("data:image/png;base64,"+big) +
			`,{"type":"text","text":"two ` + md(small) + `"},{"type":"image_url","image_url":"data:image/webp;base64,` + small2 + `"},` +
			part("data:text/plain;base64,QUJD") + `,` + part("https://cdn.example.com/p.png") + `,{"type":"text","text":""}]`),
		"parts, text and image in one": oaAnswer(`"content":[{"type":"text","text":"both","image_url":{"url":"data:image/png;base64,` + big + `"}}]`),
		"images[]": oaAnswer(`"content":"Here you go.","images":[` + part("data:image/png;base64,"+big) + `,` +
			part("https://cdn.example.com/h.png") + `,` + part(`data:image\/png;base64,`+strings.ReplaceAll(small, "/", `\/`)) + `]`),
		"images[], markdown too":   oaAnswer(`"content":"a ` + md(small) + ` b","images":[` + part("data:image/png;base64,"+big) + `]`),
		"images[], links only":     oaAnswer(`"content":"x","images":[` + part("https://cdn.example.com/h.png") + `]`),
		"data URL with parameters": oaAnswer(`"content":[` + part("data:image/png;name=a.png;base64,"+big) + `]`),
		"jpeg labelled png":        oaAnswer(`"content":"` + md(jpeg) + `"`),
		"escaped key": oaAnswer(`"content":[{"type":"image_url","image_url":{"ur\u006c":"data:image/png;base64,` + small +
			`"}},` + part("data:image/png;base64,"+big) + `]`),
		"two choices": []byte(`{"id":"c","choices":[{"index":0,"message":{"content":"no image"},"finish_reason":"content_filter"},` +
			`{"index":1,"message":{"content":"` + md(big) + `"},"finish_reason":"length"},{"message":{"content":"` + md(small) + `"}}],"usage":{"completion_tokens":3000}}`),
		"usage first, indented": []byte("{\n  \"usage\": {\"prompt_tokens\": 3},\n  \"choices\": [\n    {\n      \"message\": {\n        \"content\": \"t " +
			md(big) + "\"\n      }\n    }\n  ],\n  \"created\": 5\n}\n"),
	}
}

func TestOpenAIForwardMatchesBuffered(t *testing.T) {
	p := testOpenAI(t, "")
	for name, body := range oaInputs() {
		want, err := oaBuffered(p, body)
		if err != nil {
			t.Fatalf("%s: buffered: %v", name, err)
		}
		for rname, r := range readers(body) {
			got, err := oaForwarded(p, r)
			sameEvents(t, name+", "+rname, got, want, err)
		}
	}
}

// TestOpenAIForwardHead: the answer's id and creation time, when they
// precede the first image, are the buffered reading's; an answer without
// an image is handed over whole.
func TestOpenAIForwardHead(t *testing.T) {
	p := testOpenAI(t, "")
	f := p.newForward(nil, bytes.NewReader(oaAnswer(`"content":"`+md(fakeup.PNGBase64(300<<10))+`"`)))
	if _, err := f.Next(); err != nil {
		t.Fatal(err)
	}
	if id, created := f.Head(); id != "chatcmpl-1" || created != 1756195512 {
		t.Errorf("head %q %d", id, created)
	}
	if _, ok := Whole(f); ok {
		t.Error("an answer being forwarded is handed over whole")
	}
	f.Close()
	f = p.newForward(nil, bytes.NewReader(oaAnswer(`"content":"no image"`)))
	if _, err := f.Next(); err != nil {
		t.Fatal(err)
	}
	res, ok := Whole(f)
	if !ok || res.ID != "chatcmpl-1" || string(res.Choices[0].Text) != "no image" {
		t.Fatalf("whole %v %+v", ok, res)
	}
}

// oaFirstErr is the error of the first Next: the one the router fails over
// on.
func oaFirstErr(p *OpenAI, body []byte) error {
	f := p.newForward(nil, bytes.NewReader(body))
	defer f.Close()
	_, err := f.Next()
	return err
}

func TestOpenAIForwardRefusesBeforeCommit(t *testing.T) {
	p := testOpenAI(t, "")
	png, big := fakeup.PNGBase64(100), fakeup.PNGBase64(300<<10)
	bomb := pngHeaderB64(20000, 20000)
	damaged := base64.StdEncoding.EncodeToString([]byte("\x89PNG\r\n\x1a\n0000XXXX00000000000000000000"))
	full := oaAnswer(`"content":"hi ` + md(png) + `"`)
	cases := map[string][]byte{
		"garbage":                 []byte("<html>502</html>"),
		"truncated text":          []byte(`{"choices":[{"message":{"content":"hi`),
		"cut in the image":        oaAnswer(`"content":"hi ` + md(png))[:60+len(png)/2],
		"cut after a small image": full[:len(full)-20],
		"markdown bad base64":     oaAnswer(`"content":"` + md(png[:40]+"!!!!") + `"`),
		"markdown not closed":     oaAnswer(`"content":"![image](data:image/png;base64,` + png + `"`),
		"markdown cut short":      oaAnswer(`"content":"![image](data:image/png;base64,` + png[:41] + `)"`),
		"markdown empty image":    oaAnswer(`"content":"![image](data:image/png;base64,)"`),
		"markdown escaped quote":  oaAnswer(`"content":"` + md(png[:40]+`\"AAA`) + `"`),
		"markdown unicode escape": oaAnswer(`"content":"` + md(png[:40]+`\u0041AAA`) + `"`),
		"part bad base64":         oaAnswer(`"content":[` + part("data:image/png;base64,"+png[:40]+"A===") + `]`),
		"images[] empty image":    oaAnswer(`"content":"x","images":[` + part("data:image/png;base64,") + `]`),
		"error in 200":            []byte(`{"error":{"message":"x","type":"server_error"}}`),
		"error before choices":    []byte(`{"error":null,"choices":[{"message":{"content":"` + md(big) + `"}}]}`),
		"error after choices":     []byte(`{"choices":[{"message":{"content":"` + md(png) + `"}}],"error":{}}`),
		"no choices":              []byte(`{"usage":{"prompt_tokens":3}}`),
		"empty choices":           []byte(`{"choices":[]}`),
		"choice not an object":    []byte(`{"choices":[1,{"message":{"content":"` + md(big) + `"}}]}`),
		"no message":              []byte(`{"choices":[{"content":"x"}]}`),
		"two choices members":     []byte(`{"choices":[{"message":{"content":"x"}}],"choices":[{"message":{"content":"` + md(big) + `"}}]}`),
		"trailing data":           append(oaAnswer(`"content":"x"`), " x"...),
		"mismatched":              []byte(`{"choices":[{"message":{"content":"x"]}]}`),
		"deep":                    []byte(strings.Repeat("[", 100) + strings.Repeat("]", 100)),
		"huge dimensions":         oaAnswer(`"content":"` + md(bomb) + `"`),
		"huge dimensions, part":   oaAnswer(`"content":[` + part("data:image/png;base64,"+bomb) + `]`),
		"damaged header":          oaAnswer(`"content":"` + md(damaged) + `"`),
		"damaged header, large":   oaAnswer(`"content":"` + md(damaged[:len(damaged)-4]+big[:300<<10]) + `"`),
		"too many images":         oaAnswer(`"content":"` + strings.Repeat(md(png), maxAnswerImages+1) + `"`),
		"index after its images":  []byte(`{"choices":[{"message":{"content":"` + md(png) + `"},"index":3}]}`),
	}
	for name, body := range cases {
		err := oaFirstErr(p, body)
		pe, ok := AsError(err)
		if !ok || !pe.Failover() {
			t.Errorf("%s: first Next err = %v, want a failover", name, err)
		}
		// Two layouts only the forward refuses (openai_forward.go).
		if _, err := p.parseResult(body); err == nil && name != "index after its images" && name != "two choices members" {
			t.Errorf("%s: the buffered reading accepts it", name)
		}
	}
}

// TestOpenAIForwardFailsAfterCommit: once the first image is under way, a
// body that breaks ends the answer with an error, never a quiet EOF.
func TestOpenAIForwardFailsAfterCommit(t *testing.T) {
	p := testOpenAI(t, "")
	body := oaAnswer(`"content":"hi ` + md(fakeup.PNGBase64(400<<10)) + `"`)
	for name, cut := range map[string]io.Reader{
		"dropped":       io.MultiReader(bytes.NewReader(body[:len(body)/2]), iotest.ErrReader(io.ErrUnexpectedEOF)),
		"ended":         bytes.NewReader(body[:len(body)/2]),
		"garbage":       io.MultiReader(bytes.NewReader(body[:len(body)/2]), strings.NewReader("!!!!")),
		"string ends":   io.MultiReader(bytes.NewReader(body[:len(body)/2]), strings.NewReader(`"}}]}`)),
		"error member":  bytes.NewReader(bytes.Replace(body, []byte(`"usage"`), []byte(`"error":1,"usage"`), 1)),
		"bad text tail": bytes.NewReader(bytes.Replace(body, []byte(`)"`), []byte(")\x01\""), 1)),
	} {
		failsAfterCommit(t, name, p.newForward(nil, cut))
	}
}

// TestOpenAIForwardRefusesAHugeDataURL: a data URL past MaxBodyBytes is
// refused as it comes, whatever its shape.
func TestOpenAIForwardRefusesAHugeDataURL(t *testing.T) {
	p := testOpenAI(t, "")
	p.opts.MaxBodyBytes = 1 << 20
	huge := fakeup.PNGBase64(2 << 20)
	for name, body := range map[string][]byte{
		"markdown":      oaAnswer(`"content":"` + md(huge) + `"`),
		"part":          oaAnswer(`"content":[` + part("data:image/png;base64,"+huge) + `]`),
		"not cut out":   oaAnswer(`"content":[` + part("data:image/png;x="+strings.Repeat("a", 600)+";base64,"+huge) + `]`),
		"not an image":  oaAnswer(`"content":"data:image/png;base64,` + huge + `"`),
		"long literal":  []byte(`{"choices":[{"index":` + strings.Repeat("1", 2<<20) + `}]}`),
		"long markdown": oaAnswer(`"content":"` + strings.Repeat("![a](data:image/png;base64,", 1<<16) + `"`),
	} {
		got, err := oaForwarded(p, bytes.NewReader(body))
		if pe, ok := AsError(err); !ok || pe.Kind != KindInvalidResponse {
			t.Errorf("%s: err = %v after %d bytes described", name, err, len(got))
		}
	}
}

// TestOpenAIForwardHoldsAWindow: the windows handed out are bounded
// whatever the image's size, and the skeleton stays small.
func TestOpenAIForwardHoldsAWindow(t *testing.T) {
	p := testOpenAI(t, "")
	for name, body := range map[string][]byte{
		"markdown": oaAnswer(`"content":"hi ` + md(fakeup.PNGBase64(1500<<10)) + `"`),
		"images[]": oaAnswer(`"content":"hi","images":[` + part("data:image/png;base64,"+fakeup.PNGBase64(1500<<10)) + `]`),
	} {
		f := p.newForward(nil, bytes.NewReader(body))
		holdsAWindow(t, name, &f.forwardWalk)
		f.Close()
	}
}

// startReseller starts fakeup's reseller server and a provider in front of
// it.
func startReseller(t *testing.T) (*fakeup.Server, *OpenAI) {
	t.Helper()
	s, err := fakeup.StartOpenAI("sk-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, testOpenAI(t, s.URL())
}

// TestOpenAIForwardOverSocket: the reseller's answer forwarded from a real
// connection hands out what Chat reads whole, in both reseller styles;
// failures before the commit come from ChatStream or the first Next, a cut
// after it from a later Next.
func TestOpenAIForwardOverSocket(t *testing.T) {
	s, p := startReseller(t)
	ctx := context.Background()
	s.SetImageSize(1_500_000)
	for _, style := range []string{fakeup.StyleMarkdown, fakeup.StyleImages} {
		for _, images := range []int{0, 1, 2} {
			s.SetResellerStyle(style)
			s.SetImages(images)
			res, err := p.Chat(ctx, parse(t, drawBody), "m")
			if err != nil {
				t.Fatal(err)
			}
			want, _ := describe(newResultStream(res, false))
			res.Release()
			req := parse(t, drawBody)
			req.Forward = true
			st, err := p.ChatStream(ctx, req, "m")
			if err != nil {
				t.Fatal(err)
			}
			got, err := describe(st)
			st.Close()
			if err != nil || got != want {
				t.Errorf("%s, %d images: err %v, events differ (%d/%d bytes)", style, images, err, len(got), len(want))
			}
			if images > 0 && strings.Count(want, "[image") != images {
				t.Errorf("%s: %d images in %.200s", style, images, want)
			}
		}
	}

	req := parse(t, drawBody)
	req.Forward = true
	s.SetFault(fakeup.Fault{Status: 500})
	if _, err := p.ChatStream(ctx, req, "m"); err == nil {
		t.Error("a 500 was forwarded")
	} else if pe, ok := AsError(err); !ok || !pe.Failover() {
		t.Errorf("500: %v", err)
	}
	s.SetFault(fakeup.Fault{Garbage: true})
	// Garbage is small: read whole, it fails at once; the router fails
	// over on an error from ChatStream as on one from the first Next.
	if st, err := p.ChatStream(ctx, req, "m"); err == nil {
		if _, err = st.Next(); err == nil {
			t.Error("garbage was forwarded")
		}
		st.Close()
	} else if pe, ok := AsError(err); !ok || !pe.Failover() {
		t.Errorf("garbage: %v", err)
	}
	s.SetFault(fakeup.Fault{DropMidBody: true})
	st, err := p.ChatStream(ctx, req, "m")
	if err != nil {
		t.Fatal(err)
	}
	failsAfterCommit(t, "dropped mid-body", st)
	s.ClearFault()
}

// FuzzOpenAIForward reads any body both ways: an answer the forward hands
// out whole is the buffered reading's, event for event; an answer the
// buffered reading refuses, the forward refuses.
func FuzzOpenAIForward(f *testing.F) {
	for _, body := range oaInputs() {
		if len(body) < 64<<10 {
			f.Add(body)
		}
	}
	f.Add(oaAnswer(`"content":"a ` + md("QUJD") + ` b ![c](https://x.y/z) ` + md("QUI=") + `"`))
	f.Add(oaAnswer(`"content":[` + part("data:image/png;base64,QUJD") + `],"images":[` + part("data:image\\/png;base64,QUJD") + `]`))
	f.Add([]byte(`{"choices":[{"message":{"content":"![](data:image/png;base64,QUJD)"},"index":1},{"message":{}}],"id":"x"}`))
	p := testOpenAI(f, "")
	f.Fuzz(func(t *testing.T, body []byte) {
		want, werr := oaBuffered(p, body)
		for _, r := range []io.Reader{bytes.NewReader(body), iotest.OneByteReader(bytes.NewReader(body))} {
			got, err := oaForwarded(p, r)
			if err != nil {
				if _, ok := AsError(err); !ok {
					t.Fatalf("error is not an *Error: %v", err)
				}
				continue
			}
			if werr != nil {
				t.Fatalf("forwarded an answer the buffered reading refuses (%v):\n%s", werr, got)
			}
			if got != want {
				t.Fatalf("events differ:\n got %s\nwant %s", got, want)
			}
		}
	})
}

// TestOpenAIForwardAgreesOnRefusals: shapes the fuzz seeds do not hold,
// each read both ways.
func TestOpenAIForwardAgreesOnRefusals(t *testing.T) {
	p := testOpenAI(t, "")
	for i, body := range []string{
		`{"choices":[{"message":{"content":"![x](data:image/png;base64,QUJD"}}]}`,
		`{"choices":[{"message":{"content":"![x](data:image/png;base64,QUJD) ![y](data:image/gif;base64,QUJD!)"}}]}`,
		`{"choices":[{"message":{"content":[{"text":"![x](data:image/png;base64,QU\/D)"}]}}]}`,
		`{"choices":[{"message":{"images":[{"image_url":"data:image/png;base64,QUJ"}]}}]}`,
	} {
		_, werr := oaBuffered(p, []byte(body))
		_, err := oaForwarded(p, strings.NewReader(body))
		if (werr == nil) != (err == nil) {
			t.Errorf("%d: buffered %v, forwarded %v", i, werr, err)
		}
	}
}
