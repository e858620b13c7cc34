package provider

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"image/jpeg"
	"io"
)

// Limits on input images, checked from their headers before anything decodes
// pixels: a small file can declare a huge image (a decompression bomb).
const (
	MaxImageSide   = 16384
	MaxImagePixels = 100_000_000
)

// maxHeaderBytes bounds what is read of an image to find its dimensions. A
// JPEG's frame header follows its metadata (EXIF, XMP, ICC profiles in
// segments of up to 64 KB each), which takes a few hundred kilobytes at
// most in practice; only the segments' lengths are read, never their pixels.
const maxHeaderBytes = 4 << 20

// sniffBytes are enough of an image's first bytes to tell its kind.
const sniffBytes = 18

// checkImageB64 reads the start of a base64 image and judges it: the media
// type its content shows (label, the type the client declared, only tells
// HEIC from HEIF), or a reason when the image is refused.
func checkImageB64(label string, b64 []byte) (mime, why string) {
	r := &b64Errors{r: base64.NewDecoder(base64.StdEncoding, bytes.NewReader(b64))}
	mime, why = checkImage(label, r)
	if r.err != nil {
		return "", "its base64 does not decode"
	}
	return mime, why
}

// b64Errors notes the error of a base64 decoder, to tell bad base64 from a
// bad image.
type b64Errors struct {
	r   io.Reader
	err error
}

func (b *b64Errors) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	var corrupt base64.CorruptInputError
	if errors.As(err, &corrupt) {
		b.err = err
	}
	return n, err
}

// checkImageBytes is checkImageB64 for an image already in bytes (one
// fetched from an http(s) URL): the same checks, the same reasons.
func checkImageBytes(label string, data []byte) (mime, why string) {
	return checkImage(label, bytes.NewReader(data))
}

// checkImage judges an image from its first bytes, reading no more than
// maxHeaderBytes of r. The bytes decide the type, not the label: clients
// label JPEG as PNG (3.x models answer JPEG labelled image/png, and clients
// send that answer back), and Google would refuse or misread a wrong label.
// GIF is refused here because Google does not take it: better a clear 400
// now than Google's after a paid attempt.
func checkImage(label string, r io.Reader) (mime, why string) {
	r = io.LimitReader(r, maxHeaderBytes)
	var head [sniffBytes]byte
	n, _ := io.ReadFull(r, head[:])
	kind := imageKind(head[:n])
	switch kind {
	case "":
		return "", "its content is not a PNG, JPEG, WebP, HEIC or HEIF image"
	case "image/gif":
		return "", "it is a GIF image, which the model does not take; send PNG, JPEG, WebP, HEIC or HEIF"
	}
	w, h, err := imageSize(kind, io.MultiReader(bytes.NewReader(head[:n]), r))
	var unsupported jpeg.UnsupportedError
	switch {
	case errors.As(err, &unsupported):
		// Arithmetic or lossless coding, 12-bit samples, rare subsampling:
		// the frame header is not read, so the size is unknown.
		return "", "its JPEG encoding is one the gateway does not read (" + string(unsupported) +
			"); re-encode it as a baseline or progressive JPEG"
	case err != nil:
		return "", "its " + kind + " header is damaged or cut"
	case w > MaxImageSide || h > MaxImageSide || int64(w)*int64(h) > MaxImagePixels:
		return "", "its declared size is too large"
	}
	if kind == "image/heic" && label == "image/heif" {
		return label, ""
	}
	return kind, ""
}

// sniffB64 returns the media type the first bytes of a base64 image show, or
// "" when they show none of the known kinds. It decodes 18 bytes on the
// stack: cheap enough for every image of every answer.
func sniffB64(b64 []byte) string {
	var head [sniffBytes]byte
	n := min(len(b64), base64.StdEncoding.EncodedLen(sniffBytes))
	n -= n % 4
	m, err := base64.StdEncoding.Decode(head[:], b64[:n])
	if err != nil && m == 0 {
		return ""
	}
	return imageKind(head[:m])
}

// outputMIME is the media type of a generated image: what its bytes show,
// whatever the upstream's label says. A label of the HEIC family is kept
// when the bytes agree (HEIC and HEIF share their magic); bytes of no known
// kind keep the label.
func outputMIME(label string, b64 []byte) string {
	kind := sniffB64(b64)
	switch {
	case kind == "":
		return label
	case kind == "image/heic" && label == "image/heif":
		return label
	}
	return kind
}

// imageKind is the media type an image's first bytes show, "" for none of
// the known kinds.
func imageKind(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		return "image/png"
	case bytes.HasPrefix(b, []byte("\xff\xd8\xff")):
		return "image/jpeg"
	case len(b) >= 12 && string(b[:4]) == "RIFF" && string(b[8:12]) == "WEBP":
		return "image/webp"
	case bytes.HasPrefix(b, []byte("GIF87a")) || bytes.HasPrefix(b, []byte("GIF89a")):
		return "image/gif"
	case len(b) >= 12 && string(b[4:8]) == "ftyp":
		switch string(b[8:12]) {
		case "heic", "heix", "hevc", "hevx", "heim", "heis", "mif1", "msf1":
			return "image/heic"
		}
	}
	return ""
}

// errHeader is a header that is cut or does not hold a size.
var errHeader = errors.New("image header damaged or cut")

// imageSize reads the dimensions an image of the given kind declares from
// the start of r. HEIC sizes are not read (0, 0 and no error).
func imageSize(kind string, r io.Reader) (w, h int, err error) {
	switch kind {
	case "image/jpeg":
		return jpegSize(r)
	case "image/png":
		return fixedHeader(r, 24, pngSize)
	case "image/webp":
		return fixedHeader(r, 30, webpSize)
	}
	return 0, 0, nil
}

// jpegSize reads the frame header (SOF) with image/jpeg, which walks the
// metadata segments before it. Unless the file is JFIF, image/jpeg reads on
// to the first scan (SOS) before it answers; the bytes are followed by a
// scan marker so that a whole frame header decides when they stop short of
// the scan, as it did when this check walked the segments itself.
func jpegSize(r io.Reader) (int, int, error) {
	cfg, err := jpeg.DecodeConfig(io.MultiReader(r, bytes.NewReader([]byte{0xff, 0xda, 0x00, 0x02})))
	if err != nil {
		return 0, 0, err
	}
	if cfg.Width < 1 || cfg.Height < 1 {
		return 0, 0, errHeader
	}
	return cfg.Width, cfg.Height, nil
}

// fixedHeader reads the n bytes of a header at a fixed place and its size.
func fixedHeader(r io.Reader, n int, size func([]byte) (int, int, bool)) (int, int, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, 0, errHeader
	}
	return sized(size(b))
}

// headerSize is imageSize for a PNG or WebP whose first bytes are in
// memory. The size functions are called directly, not through a function
// value, so that b can stay on the caller's stack.
func headerSize(kind string, b []byte) (int, int, error) {
	switch {
	case kind == "image/png" && len(b) >= 24:
		return sized(pngSize(b[:24]))
	case kind == "image/webp" && len(b) >= 30:
		return sized(webpSize(b[:30]))
	}
	return 0, 0, errHeader
}

func sized(w, h int, ok bool) (int, int, error) {
	if !ok || w < 1 || h < 1 {
		return 0, 0, errHeader
	}
	return w, h, nil
}

// pngSize reads the IHDR, the first chunk, at its fixed offset. image/png
// would check the chunk's CRC as well, which this check has never judged
// (the provider does).
func pngSize(b []byte) (int, int, bool) {
	if string(b[12:16]) != "IHDR" {
		return 0, 0, false
	}
	return int(binary.BigEndian.Uint32(b[16:20])), int(binary.BigEndian.Uint32(b[20:24])), true
}

// webpSize reads the lossy (VP8), lossless (VP8L) or extended (VP8X) header
// (golang.org/x/image/webp would read it too, but is not a dependency).
func webpSize(b []byte) (int, int, bool) {
	switch string(b[12:16]) {
	case "VP8 ":
		return int(binary.LittleEndian.Uint16(b[26:28]) & 0x3fff), int(binary.LittleEndian.Uint16(b[28:30]) & 0x3fff), true
	case "VP8L":
		v := binary.LittleEndian.Uint32(b[21:25])
		return int(v&0x3fff) + 1, int((v>>14)&0x3fff) + 1, true
	case "VP8X":
		w := int(b[24]) | int(b[25])<<8 | int(b[26])<<16
		h := int(b[27]) | int(b[28])<<8 | int(b[29])<<16
		return w + 1, h + 1, true
	}
	return 0, 0, false
}
