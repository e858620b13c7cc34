package provider

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"nanogate/config"
	"nanogate/internal/fakeup"
)

// TestSplitBodyReadsAndWritesTheSameBytes: WriteTo and Read (in reads of
// every size from 1 byte) give the gateway's bytes with the references
// inserted, whatever the layout: a reference first, last, two in a row,
// an empty one.
func TestSplitBodyReadsAndWritesTheSameBytes(t *testing.T) {
	a, b := bytes.Repeat([]byte("A"), 300), bytes.Repeat([]byte("b"), 17)
	for name, sb := range map[string]splitBody{
		"no reference": {buf: []byte("only the gateway's")},
		"middle":       {buf: []byte(`{"data":"","x":1}`), refs: []bodyRef{{at: 9, ext: a}}},
		"first, last":  {buf: []byte("mid"), refs: []bodyRef{{at: 0, ext: a}, {at: 3, ext: b}}},
		"two in a row": {buf: []byte("<>"), refs: []bodyRef{{at: 1, ext: a}, {at: 1, ext: b}}},
		"empty":        {buf: []byte("<>"), refs: []bodyRef{{at: 1, ext: nil}, {at: 2, ext: b}}},
		"only a ref":   {refs: []bodyRef{{at: 0, ext: a}}},
	} {
		want := sb.flatten()
		if sb.Len() != len(want) {
			t.Errorf("%s: Len %d, flattened %d", name, sb.Len(), len(want))
		}
		var w bytes.Buffer
		c := sb
		if n, err := c.WriteTo(&w); err != nil || n != int64(len(want)) || !bytes.Equal(w.Bytes(), want) {
			t.Errorf("%s: WriteTo = %d, %v: %q, want %q", name, n, err, w.Bytes(), want)
		}
		for _, size := range []int{1, 2, 7, 64, 4093} {
			c := sb
			got, err := io.ReadAll(&chunkReader{r: &c, n: size})
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: reads of %d: %v: %q, want %q", name, size, err, got, want)
			}
		}
	}
}

// chunkReader reads at most n bytes per Read from r.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// TestGeminiInputImageIsSentWithoutACopy: a request carrying a large image
// reaches Google byte for byte as the copied body would, while the body the
// gateway built holds none of the image: it references the client's.
func TestGeminiInputImageIsSentWithoutACopy(t *testing.T) {
	img := fakeup.PNGBase64(600 << 10)
	small := fakeup.NthPNGBase64(100, 1)
	body := strings.Replace(string(fakeup.Fixture("openai/request_chat_multi_image.json")), redB64, img, 1)
	body = strings.Replace(body, redB64, small, 1)
	req := parse(t, body)
	plan, rerr := planGemini(req, testModel)
	if rerr != nil {
		t.Fatal(rerr)
	}
	want := appendGeminiBody(nil, req, plan)
	if !bytes.Contains(want, []byte(img)) {
		t.Fatal("the fixture's image is not in the body")
	}
	var refs []bodyRef
	own := appendGeminiBodyRefs(nil, req, plan, &refs)
	if len(refs) == 0 || len(own) >= refMin {
		t.Errorf("the gateway's bytes are %d long with %d references: the image was copied", len(own), len(refs))
	}
	if got := (&splitBody{buf: own, refs: refs}).flatten(); !bytes.Equal(got, want) {
		t.Error("the split body differs from the copied one")
	}

	s, err := fakeup.Start(fakeup.Options{Kind: fakeup.Gemini, Key: fakeKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	p, err := NewGemini(config.Provider{Name: "g", Kind: "gemini", BaseURL: s.URL(), APIKey: fakeKey}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	for range 2 { // the second on a reused connection
		res, err := p.Chat(context.Background(), req, testModel)
		if err != nil {
			t.Fatal(err)
		}
		res.Release()
		if got := s.LastBody(); !bytes.Equal(got, want) {
			t.Fatalf("Google received %d bytes, want the %d of the copied body", len(got), len(want))
		}
	}
}

// TestResellerInputImageIsSentWithoutACopy: the same for the openai kind,
// whose body carries the client's messages as they came.
func TestResellerInputImageIsSentWithoutACopy(t *testing.T) {
	img := fakeup.PNGBase64(600 << 10)
	body := strings.Replace(string(fakeup.Fixture("openai/request_chat_multi_image.json")), redB64, img, 1)
	req := parse(t, body)
	want := appendOpenAIBody(nil, req, "m", false)
	if !bytes.Contains(want, []byte(img)) {
		t.Fatal("the fixture's image is not in the body")
	}
	var refs []bodyRef
	own := appendOpenAIBodyRefs(nil, req, "m", false, &refs)
	if len(refs) == 0 || len(own) >= refMin {
		t.Errorf("the gateway's bytes are %d long with %d references: the image was copied", len(own), len(refs))
	}
	if got := (&splitBody{buf: own, refs: refs}).flatten(); !bytes.Equal(got, want) {
		t.Error("the split body differs from the copied one")
	}

	s, err := fakeup.Start(fakeup.Options{Kind: fakeup.OpenAI, Key: fakeKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	p, err := NewOpenAI(config.Provider{Name: "r", Kind: "openai", BaseURL: s.URL(), APIKey: fakeKey}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	for range 2 {
		res, err := p.Chat(context.Background(), req, "m")
		if err != nil {
			t.Fatal(err)
		}
		res.Release()
		if got := s.LastBody(); !bytes.Equal(got, want) {
			t.Fatalf("the reseller received %d bytes, want the %d of the copied body", len(got), len(want))
		}
	}
}

// TestSmallForwardedAnswerIsReadWhole: an answer asked to be forwarded
// whose Content-Length fits smallAnswerBytes is read and parsed as a
// buffered one (Whole), a large one is walked; both kinds.
func TestSmallForwardedAnswerIsReadWhole(t *testing.T) {
	for _, kind := range []fakeup.Kind{fakeup.OpenAI, fakeup.Gemini} {
		s, err := fakeup.Start(fakeup.Options{Kind: kind, Key: fakeKey})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		pc := config.Provider{Name: "p", Kind: config.KindOpenAI, BaseURL: s.URL(), APIKey: fakeKey}
		model := "m"
		if kind == fakeup.Gemini {
			pc.Kind, model = config.KindGemini, testModel
		}
		p, err := New(pc, Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		for _, c := range []struct {
			size  int
			whole bool
		}{{2 << 10, true}, {300 << 10, false}} {
			s.SetImageSize(c.size)
			req := parse(t, drawBody)
			req.Forward = true
			st, err := p.ChatStream(context.Background(), req, model)
			if err != nil {
				t.Fatal(err)
			}
			res, whole := Whole(st)
			if whole != c.whole {
				t.Errorf("%v, %d-byte image: read whole %v, want %v", kind, c.size, whole, c.whole)
			}
			if whole {
				if res.Images() != 1 {
					t.Errorf("%v: %d images", kind, res.Images())
				}
				res.Release()
			} else {
				st.Close()
			}
		}
	}
}
