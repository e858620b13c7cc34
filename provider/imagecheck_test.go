package provider

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/jpeg"
	"slices"
	"strings"
	"testing"
)

// encodedJPEG is a real w x h JPEG, as image/jpeg writes it (no JFIF
// segment: a decoder reads on to the first scan).
func encodedJPEG(t *testing.T, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, image.NewGray(image.Rect(0, 0, w, h)), nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// withMetadata puts n bytes of APP1 segments (EXIF, then XMP as cameras and
// editors write them) between a JPEG's start and its other segments.
func withMetadata(jpg []byte, n int) []byte {
	out := append([]byte{}, jpg[:2]...)
	for i := 0; n > 0; i++ {
		data := min(n, 65533-64)
		tag := "Exif\x00\x00"
		if i > 0 {
			tag = "http://ns.adobe.com/xap/1.0/\x00"
		}
		seg := append([]byte(tag), bytes.Repeat([]byte{0x2a}, data-len(tag))...)
		out = append(out, 0xff, 0xe1)
		out = binary.BigEndian.AppendUint16(out, uint16(len(seg)+2))
		out = append(out, seg...)
		n -= data
	}
	return append(out, jpg[2:]...)
}

// sof is the offset of a JPEG's baseline frame header.
func sof(t *testing.T, jpg []byte) int {
	t.Helper()
	i := bytes.Index(jpg, []byte{0xff, 0xc0})
	if i < 0 {
		t.Fatal("no SOF0 in the JPEG")
	}
	return i
}

// declaring is jpg with its frame header declaring w x h.
func declaring(t *testing.T, jpg []byte, w, h uint16) []byte {
	out := append([]byte{}, jpg...)
	i := sof(t, out)
	binary.BigEndian.PutUint16(out[i+5:], h)
	binary.BigEndian.PutUint16(out[i+7:], w)
	return out
}

// pngHeader is the signature and IHDR of a w x h PNG, its CRC right.
func pngHeader(w, h uint32) []byte {
	chunk := []byte("IHDR")
	chunk = binary.BigEndian.AppendUint32(chunk, w)
	chunk = binary.BigEndian.AppendUint32(chunk, h)
	chunk = append(chunk, 8, 2, 0, 0, 0)
	b := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0d")
	b = append(b, chunk...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(chunk))
}

// webpVP8X is the header of an extended WebP of w x h.
func webpVP8X(w, h int) []byte {
	b := []byte("RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x00\x00\x00\x00")
	w, h = w-1, h-1
	return append(b, byte(w), byte(w>>8), byte(w>>16), byte(h), byte(h>>8), byte(h>>16))
}

// judge runs both entry points, base64 and bytes, and fails t when they
// disagree.
func judge(t *testing.T, label string, data []byte) (mime, why string) {
	t.Helper()
	mime, why = checkImageBytes(label, data)
	m64, why64 := checkImageB64(label, []byte(base64.StdEncoding.EncodeToString(data)))
	if m64 != mime || why64 != why {
		t.Errorf("base64: %q %q; bytes: %q %q", m64, why64, mime, why)
	}
	return mime, why
}

func TestAJPEGWithLargeMetadataIsRead(t *testing.T) {
	jpg := withMetadata(encodedJPEG(t, 640, 480), 80<<10)
	if _, err := jpeg.Decode(bytes.NewReader(jpg)); err != nil {
		t.Fatalf("the test's JPEG does not decode: %v", err)
	}
	if mime, why := judge(t, "image/png", jpg); mime != "image/jpeg" || why != "" {
		t.Fatalf("judged %q, refused %q; want image/jpeg", mime, why)
	}
	if w, h, err := imageSize("image/jpeg", bytes.NewReader(jpg)); w != 640 || h != 480 || err != nil {
		t.Errorf("size %dx%d (%v), want 640x480", w, h, err)
	}
}

func TestHugeDeclaredSizesAreRefused(t *testing.T) {
	jpg := withMetadata(encodedJPEG(t, 64, 64), 80<<10)
	for name, data := range map[string][]byte{
		"png 100000x100000":                pngHeader(100000, 100000),
		"png 16000x16000, too many pixels": pngHeader(16000, 16000),
		"jpeg 65535x65535":                 declaring(t, jpg, 65535, 65535),
		"jpeg 20000x10":                    declaring(t, jpg, 20000, 10),
		"webp 100000x100000":               webpVP8X(100000, 100000),
	} {
		t.Run(name, func(t *testing.T) {
			if _, why := judge(t, "image/png", data); why != "its declared size is too large" {
				t.Errorf("refused for %q, want the declared size", why)
			}
		})
	}
}

func TestCutAndGarbageImagesAreRefused(t *testing.T) {
	jpg := withMetadata(encodedJPEG(t, 64, 64), 80<<10)
	for name, data := range map[string][]byte{
		"png cut in its IHDR":         pngHeader(64, 64)[:20],
		"jpeg cut in its metadata":    jpg[:40<<10],
		"jpeg cut before its frame":   jpg[:sof(t, jpg)],
		"jpeg cut in its frame":       jpg[:sof(t, jpg)+6],
		"jpeg without a frame":        slices.Concat(jpg[:sof(t, jpg)], []byte{0xff, 0xd9}),
		"jpeg declaring 0x0":          declaring(t, jpg, 0, 0),
		"webp cut in its header":      webpVP8X(64, 64)[:22],
		"webp of an unknown chunk":    []byte("RIFF\x00\x00\x00\x00WEBPVP9 \x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
		"text":                        []byte("not an image at all...."),
		"nothing":                     nil,
		"a jpeg's magic then garbage": []byte("\xff\xd8\xff\x00garbage garbage garbage"),
	} {
		t.Run(name, func(t *testing.T) {
			if mime, why := judge(t, "image/jpeg", data); why == "" {
				t.Errorf("taken as %s", mime)
			}
		})
	}
}

func TestBadBase64IsNamed(t *testing.T) {
	if _, why := checkImageB64("image/png", []byte("iVBORw0K!!!!")); why != "its base64 does not decode" {
		t.Errorf("refused for %q", why)
	}
}

// TestAFrameHeaderPastTheReadBoundIsRefused: no more than maxHeaderBytes is
// read to find a JPEG's size.
func TestAFrameHeaderPastTheReadBoundIsRefused(t *testing.T) {
	jpg := withMetadata(encodedJPEG(t, 64, 64), maxHeaderBytes+1)
	if _, why := judge(t, "image/jpeg", jpg); why != "its image/jpeg header is damaged or cut" {
		t.Errorf("refused for %q", why)
	}
}

func TestAJPEGCodingThatIsNotReadIsRefusedWithTheReason(t *testing.T) {
	jpg := encodedJPEG(t, 64, 64)
	jpg[sof(t, jpg)+1] = 0xc3 // lossless
	if _, why := judge(t, "image/jpeg", jpg); !strings.Contains(why, "re-encode it as a baseline or progressive JPEG") {
		t.Errorf("refused for %q", why)
	}
}

func TestHEICIsTakenWithoutItsSize(t *testing.T) {
	heic := []byte("\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
	if mime, why := judge(t, "image/heic", heic); mime != "image/heic" || why != "" {
		t.Errorf("judged %q, refused %q", mime, why)
	}
	if mime, _ := judge(t, "image/heif", heic); mime != "image/heif" {
		t.Errorf("a HEIF label became %q", mime)
	}
}
