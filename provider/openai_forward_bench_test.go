package provider

import (
	"bytes"
	"io"
	"testing"

	"nanogate/internal/fakeup"
)

// BenchmarkOpenAIAnswer reads a reseller's chat.completion that carries a
// 1.5 MB image (2 MB of base64) into the events of a forwarded answer, in
// both reseller styles: buffered (the body read whole, as the upstream
// client reads it, then parseResult) or forwarded through the window. The
// body buffer of the buffered reading is reused, as the upstream client's
// pooled responses reuse theirs; what each answer in flight holds is that
// buffer against the window.
//
//	go test ./provider/ -run '^$' -bench OpenAIAnswer -benchmem
func BenchmarkOpenAIAnswer(b *testing.B) {
	p := testOpenAI(b, "")
	img := fakeup.PNGBase64(benchImageSize)
	for _, style := range []struct {
		name string
		body []byte
	}{
		{"markdown", bytes.Replace(fakeup.Fixture("openai/response_chat_markdown_image.json"), []byte(redB64), []byte(img), 1)},
		{"images", oaAnswer(`"content":"Here it is.","images":[` + part("data:image/png;base64,"+img) + `]`)},
	} {
		body := style.body
		r := bytes.NewReader(body)
		b.Run(style.name+"/buffered", func(b *testing.B) {
			var buf []byte
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				r.Reset(body)
				buf, _ = readAll(buf[:0], r)
				res, err := p.parseResult(buf)
				if err != nil {
					b.Fatal(err)
				}
				drainOne(b, newResultStream(res, false))
			}
		})
		b.Run(style.name+"/forwarded", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				r.Reset(body)
				f := p.newForward(nil, r)
				drainOne(b, f)
				f.Close()
			}
		})
	}
}

// readAll reads r to its end into buf.
func readAll(buf []byte, r io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// drainOne reads st to its end and checks it held one image.
func drainOne(b *testing.B, st Stream) {
	images := 0
	for {
		ev, err := st.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		if ev.Piece != nil && ev.Piece.Step == ImageEnd {
			images++
		}
	}
	if images != 1 {
		b.Fatalf("%d images", images)
	}
}
