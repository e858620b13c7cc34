package openai

import (
	"bytes"
	"mime/multipart"
	"testing"
)

// FuzzParseImagesEdit feeds arbitrary multipart bodies to the edits parser: it must
// never panic, and whatever it accepts must hold a prompt and images whose
// content is a known image type.
func FuzzParseImagesEdit(f *testing.F) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	w.SetBoundary("fuzzboundary")
	w.WriteField("prompt", "blend")
	fw, _ := w.CreateFormFile("image[]", "a.png")
	fw.Write([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x02\x00\x00\x00\x02\x08\x02\x00\x00\x00"))
	w.Close()
	f.Add(buf.Bytes())
	f.Add([]byte("--fuzzboundary\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\n2\r\n--fuzzboundary--\r\n"))
	f.Add([]byte("--fuzzboundary\r\n\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, e := ParseImagesEdit("multipart/form-data; boundary=fuzzboundary", body)
		if e != nil {
			if e.Status < 400 || e.Status > 499 {
				t.Fatalf("status %d", e.Status)
			}
			return
		}
		if len(r.Inputs) == 0 {
			t.Fatal("accepted without images")
		}
		for _, in := range r.Inputs {
			if in.MIME == "" || len(in.B64) == 0 {
				t.Fatalf("accepted an input without type or data")
			}
		}
	})
}
