package images

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"strings"
	"testing"
)

func TestDecodedLen(t *testing.T) {
	for n := 1; n <= 40; n++ {
		img := testImage(n, uint64(n))
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding} {
			s := enc.EncodeToString(img)
			got, dec, err := decodedLen([]byte(s))
			if err != nil || got != int64(n) {
				t.Errorf("%d bytes as %q: decodedLen = %d, %v", n, s, got, err)
				continue
			}
			if out, err := dec.DecodeString(s); err != nil || !bytes.Equal(out, img) {
				t.Errorf("%q: the chosen encoding does not decode it: %v", s, err)
			}
		}
	}
	for _, bad := range []string{"", "A", "AAAAA", "====", "AA=", "AAA==", "AAAAA="} {
		if n, _, err := decodedLen([]byte(bad)); !errors.Is(err, ErrBadBase64) {
			t.Errorf("decodedLen(%q) = %d, %v; want ErrBadBase64", bad, n, err)
		}
	}
}

func TestOffloadRefusesWhatItCannotStore(t *testing.T) {
	e := newFSEnv(t, nil)
	img := b64(testImage(3000, 12))
	bad := append([]byte(nil), img...)
	bad[1000] = '*'
	cases := []struct {
		name, mime string
		b64        []byte
		want       error
	}{
		{"svg", "image/svg+xml", img, ErrUnsupportedType},
		{"html", "text/html", img, ErrUnsupportedType},
		{"no type", "", img, ErrUnsupportedType},
		{"empty", "image/png", nil, ErrBadBase64},
		{"impossible length", "image/png", img[:len(img)-3], ErrBadBase64},
		{"not base64", "image/png", bad, nil},
		{"line breaks", "image/png", []byte(strings.Repeat("AAAA\r\n", 100)), nil},
	}
	for i, c := range cases {
		link, err := e.off.Offload(context.Background(), c.mime, c.b64)
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: Offload = %q, %v; want an error (%v)", c.name, link, err, c.want)
		}
		if s := e.off.Stats(); s.Failed != uint64(i+1) || s.Offloaded != 0 {
			t.Errorf("%s: stats %+v", c.name, s)
		}
	}
	if names := listDir(t, e.fs.Dir()); len(names) != 0 {
		t.Errorf("failed offloads left %v", names)
	}
}

// Offload takes each image type it knows, with or without parameters and
// padding, and the link's id carries the type.
func TestOffloadTypes(t *testing.T) {
	e := newFSEnv(t, nil)
	img := testImage(1001, 13) // 1001 bytes: padded base64 ends with "="
	cases := map[string]string{
		"image/png": ".png", "IMAGE/PNG": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg",
		"image/webp; q=1": ".webp", "image/gif": ".gif", "image/heic": ".heic", "image/avif": ".avif",
	}
	for mime, ext := range cases {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding} {
			link, err := e.off.Offload(context.Background(), mime, []byte(enc.EncodeToString(img)))
			if err != nil {
				t.Fatalf("%s: %v", mime, err)
			}
			path := link[:strings.IndexByte(link, '?')]
			if !strings.HasSuffix(path, ext) {
				t.Errorf("%s: link %s, want the extension %s", mime, link, ext)
			}
			resp, body := get(t, link)
			if !bytes.Equal(body, img) || resp.Header.Get("Content-Type") != mimeOfExt(ext[1:]) {
				t.Errorf("%s: served %d bytes as %s", mime, len(body), resp.Header.Get("Content-Type"))
			}
		}
	}
}

func TestResolveFS(t *testing.T) {
	e := newFSEnv(t, nil)
	img := testImage(imageSize, 14)
	link, id := e.offload(t, img)
	mime, got, ok, err := e.off.Resolve(context.Background(), link)
	if err != nil || !ok || mime != "image/png" || !bytes.Equal(got, b64(img)) {
		t.Fatalf("Resolve(%s) = %s, %d bytes, %v, %v; want image/png and the image's base64", link, mime, len(got), ok, err)
	}
	if s := e.off.Stats(); s.Resolved != 1 {
		t.Errorf("Resolved %d", s.Resolved)
	}

	query := link[strings.IndexByte(link, '?'):]
	foreign := []string{
		"https://example.com/images/" + id + query,                      // another host
		strings.Replace(link, "http://", "https://", 1),                 // another scheme
		strings.Replace(link, "/images/", "/img/", 1),                   // another path
		strings.Replace(link, "/images/", "/x/images/", 1),              // another prefix
		strings.Replace(link, "http://", "http://user@", 1),             // credentials
		e.base + "/images/" + id,                                        // unsigned
		"data:image/png;base64," + string(b64(img[:300])),               // data URL
		"ftp://" + strings.TrimPrefix(link, "http://"),                  // another protocol
		"http://" + strings.Repeat("a", 9000),                           // absurd
		e.base + "/images/" + strings.ToUpper(id[:32]) + ".png" + query, // the id in upper case
		"",
	}
	for _, u := range foreign {
		if _, _, ok, err := e.off.Resolve(context.Background(), u); ok || err != nil {
			t.Errorf("Resolve(%.80s) = %v, %v; want false, nil", u, ok, err)
		}
	}
	// Scheme and host are case-insensitive in URLs.
	upper := strings.Replace(link, "http://127.0.0.1", "HTTP://127.0.0.1", 1)
	if _, _, ok, err := e.off.Resolve(context.Background(), upper); !ok || err != nil {
		t.Errorf("Resolve(%s) = %v, %v; want true", upper, ok, err)
	}

	// Swept: the link is ours, but nothing is behind it any more.
	if err := os.Remove(e.fs.Dir() + "/" + id); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := e.off.Resolve(context.Background(), link); ok || !errors.Is(err, ErrNotFound) {
		t.Errorf("after deletion: %v, %v; want ErrNotFound", ok, err)
	}
}

func TestResolveRefusesHugeImages(t *testing.T) {
	e := newFSEnv(t, nil)
	e.off = NewOffloader(e.fs, Options{MaxResolveBytes: 1000})
	link, _ := e.offload(t, testImage(1001, 15))
	if _, _, ok, err := e.off.Resolve(context.Background(), link); ok || !errors.Is(err, ErrTooLarge) {
		t.Errorf("Resolve of 1001 bytes with a 1000-byte cap: %v, %v", ok, err)
	}
}

// Offloading a 1.5 MB image decodes it on the way to the disk: the bytes
// allocated per Offload are a small fraction of the image, so no decoded (or
// second base64) copy of it is ever made.
func TestOffloadAllocatesNoCopy(t *testing.T) {
	e := newFSEnv(t, nil)
	src := b64(testImage(imageSize, 16))
	ctx := context.Background()
	res := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.off.Offload(ctx, "image/png", src); err != nil {
				b.Fatal(err)
			}
		}
	})
	perOp := res.AllocedBytesPerOp()
	t.Logf("Offload of %d bytes: %d B/op, %d allocs/op over %d runs", imageSize, perOp, res.AllocsPerOp(), res.N)
	if res.N == 0 || perOp > imageSize/20 {
		t.Errorf("Offload allocated %d bytes per %d-byte image, want under %d", perOp, imageSize, imageSize/20)
	}
}
