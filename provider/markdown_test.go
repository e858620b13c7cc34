package provider

import (
	"strings"
	"testing"
)

const tinyB64 = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFElEQVR42mP4z8DAAMIM////ZwAAHu8E/HMcU8wAAAAASUVORK5CYII="

func TestSplitMarkdown(t *testing.T) {
	img := "![image](data:image/png;base64," + tinyB64 + ")"
	tests := []struct {
		name, raw, text string
		images          int
	}{
		{"reseller layout", `Here is the cat.\n\n` + img, `Here is the cat.`, 1},
		{"image only", img, ``, 1},
		{"two images and text between", `A\n\n` + img + `\n\nB\n\n` + img, `A\n\nB`, 2},
		{"single newline before image", `A\n` + img, `A`, 1},
		{"escaped slashes", `A ` + strings.ReplaceAll(img, "/", `\/`), `A`, 1},
		{"no image", `just text ![not](http://x/y.png)`, `just text ![not](http://x/y.png)`, 0},
		{"not base64", `![image](data:image/png;base64,@@@@)`, `![image](data:image/png;base64,@@@@)`, 0},
		{"not an image type", `![x](data:text/plain;base64,QUJD)`, `![x](data:text/plain;base64,QUJD)`, 0},
		{"unclosed", `![image](data:image/png;base64,` + tinyB64, `![image](data:image/png;base64,` + tinyB64, 0},
		{"lone bang", `wow!`, `wow!`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text, imgs := splitMarkdown([]byte(tt.raw))
			if string(text) != tt.text {
				t.Errorf("text = %q, want %q", text, tt.text)
			}
			if len(imgs) != tt.images {
				t.Fatalf("images = %d, want %d", len(imgs), tt.images)
			}
			for _, im := range imgs {
				if im.MIME != "image/png" || string(im.B64) != tinyB64 {
					t.Errorf("image = %s %q", im.MIME, im.B64)
				}
			}
		})
	}
}

func TestScanMarkdownHoldsBackIncompleteImage(t *testing.T) {
	img := "![image](data:image/png;base64," + tinyB64 + ")"
	for cut := 1; cut < len(img); cut++ {
		raw := "text " + img[:cut]
		segs, consumed := scanMarkdown([]byte(raw), false, true, nil)
		for _, s := range segs {
			if s.image != nil {
				t.Fatalf("cut %d: image reported before it is complete", cut)
			}
		}
		if consumed > len("text ") {
			t.Fatalf("cut %d: consumed %d bytes of a possible image", cut, consumed)
		}
		// Completing it yields the image.
		rest := raw[consumed:] + img[cut:]
		segs, consumed = scanMarkdown([]byte(rest), false, true, nil)
		if len(segs) != 1 || segs[0].image == nil || consumed != len(rest) {
			t.Fatalf("cut %d: completed image not found (%d segs)", cut, len(segs))
		}
	}
}

func TestValidBase64(t *testing.T) {
	for s, want := range map[string]bool{
		tinyB64: true, "QUJD": true, "QUI=": true, "QQ==": true,
		"": false, "QUJ": false, "QU=D": false, "Q===": false, "QU J": false, "QUJD\n": false,
	} {
		if got := ValidBase64([]byte(s)); got != want {
			t.Errorf("ValidBase64(%q) = %v, want %v", s, got, want)
		}
	}
}

func FuzzSplitMarkdown(f *testing.F) {
	f.Add([]byte(`Here\n\n![image](data:image/png;base64,` + tinyB64 + `)`))
	f.Add([]byte(`![a](data:image/jpeg;base64,QUJD)![b](data:`))
	f.Add([]byte(`!!![[]](data:image/`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		text, imgs := splitMarkdown(raw)
		if len(text) > len(raw)+16*len(imgs) {
			t.Fatalf("text grew: %d > %d", len(text), len(raw))
		}
		for _, im := range imgs {
			if !ValidBase64(im.B64) || !strings.HasPrefix(im.MIME, "image/") {
				t.Fatalf("invalid image reported: %q %q", im.MIME, im.B64)
			}
		}
		// Streaming in two pieces finds the same images as one pass.
		for _, cut := range []int{len(raw) / 3, len(raw) / 2} {
			segs, consumed := scanMarkdown(raw[:cut], false, true, nil)
			n := 0
			for _, s := range segs {
				if s.image != nil {
					n++
				}
			}
			segs, _ = scanMarkdown(append(append([]byte(nil), raw[consumed:cut]...), raw[cut:]...), true, true, nil)
			for _, s := range segs {
				if s.image != nil {
					n++
				}
			}
			if n != len(imgs) {
				t.Fatalf("split at %d found %d images, one pass %d", cut, n, len(imgs))
			}
		}
	})
}

// TestMarkdownImageTypeFromBytes: a reseller relaying a 3.x model passes on
// its JPEG labelled image/png; the image keeps the type its bytes show.
func TestMarkdownImageTypeFromBytes(t *testing.T) {
	const jpeg = "/9j/2wCEAAgGBgcGBQgHBwcJ"
	_, imgs := splitMarkdown([]byte(`Here.\n\n![image](data:image\/png;base64,` + jpeg + `)`))
	if len(imgs) != 1 || imgs[0].MIME != "image/jpeg" {
		t.Fatalf("images %+v", imgs)
	}
	img, ok := parseDataURL([]byte("data:image/png;base64," + jpeg))
	if !ok || img.MIME != "image/jpeg" {
		t.Fatalf("data URL part: %+v %v", img, ok)
	}
}

// TestHostedImageLinksCount: a reseller that stores its images answers a
// markdown link to them; the image was made and counts, its link passed on
// as it is. In a request, such a link stays text (it is no image data).
func TestHostedImageLinksCount(t *testing.T) {
	const link = `https://cdn.example.com/i/abc.png?sig=x&exp=1`
	raw := []byte(`Done.\n\n![image](https:\/\/cdn.example.com\/i\/abc.png?sig=x\u0026exp=1)\n\nMore?`)
	var ch Choice
	splitMarkdownInto(&ch, raw)
	if len(ch.Images) != 1 || ch.Images[0].URL != link || ch.Images[0].B64 != nil {
		t.Fatalf("images %+v", ch.Images)
	}
	if string(ch.Text) != `Done.\n\nMore?` || len(ch.Pieces) != 3 || ch.Pieces[1].Text != nil {
		t.Fatalf("text %q pieces %+v", ch.Text, ch.Pieces)
	}
	for _, notImage := range []string{
		`![image](http://cdn.example.com/a.png)`, // not https
		`![image](https://)`,
		`![image](https://a b.png)`,
		`![image](https://a.png\n)`,
		`![image](ftp://a.png)`,
	} {
		if _, imgs := splitMarkdown([]byte(notImage)); len(imgs) != 0 {
			t.Errorf("%s: %+v", notImage, imgs)
		}
	}
	// Cut across stream deltas anywhere, the link is still one image.
	full := []byte(`a ![image](https://cdn.example.com/x.png) b`)
	for cut := 1; cut < len(full); cut++ {
		segs, consumed := scanMarkdown(full[:cut], false, true, nil)
		rest := append(append([]byte(nil), full[consumed:cut]...), full[cut:]...)
		more, _ := scanMarkdown(rest, true, true, nil)
		segs = append(segs, more...)
		n := 0
		for _, s := range segs {
			if s.image != nil {
				n++
				if s.image.URL != "https://cdn.example.com/x.png" {
					t.Errorf("cut %d: %q", cut, s.image.URL)
				}
			}
		}
		if n != 1 {
			t.Errorf("cut %d: %d images", cut, n)
		}
	}
	// Without links (requests), the markup is text.
	if segs, _ := scanMarkdown(full, true, false, nil); len(segs) != 1 || segs[0].image != nil {
		t.Errorf("request side: %+v", segs)
	}
	// An image_url part with a hosted link counts too.
	img, m := readImagePart([]byte(`{"type":"image_url","image_url":{"url":"https://cdn.example.com/y.png"}}`))
	if m != matched || img.URL != "https://cdn.example.com/y.png" {
		t.Errorf("image part: %+v %v", img, m)
	}
}
