package provider

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
)

// Limits on input images, checked from their headers before anything decodes
// pixels: a small file can declare a huge image (a decompression bomb).
const (
	MaxImageSide   = 16384
	MaxImagePixels = 100_000_000
)

// headBytes is how much of an image is decoded to read its header; JPEG
// frame headers may follow large metadata segments.
const headBytes = 64 << 10

// checkImageB64 decodes the start of a base64 image and judges it: the
// media type its content shows (label, the type the client declared, only
// tells HEIC from HEIF), or a reason when the image is refused.
func checkImageB64(label string, b64 []byte) (mime, why string) {
	n := min(len(b64), headBytes/3*4)
	n -= n % 4
	head := make([]byte, base64.StdEncoding.DecodedLen(n))
	m, err := base64.StdEncoding.Decode(head, b64[:n])
	if err != nil {
		return "", "its base64 does not decode"
	}
	return checkImageHead(label, head[:m])
}

// checkImageBytes is checkImageB64 for an image already in bytes (one
// fetched from an http(s) URL): the same checks, the same reasons.
func checkImageBytes(label string, data []byte) (mime, why string) {
	return checkImageHead(label, data[:min(len(data), headBytes)])
}

// checkImageHead judges an image from its first bytes. The bytes decide the
// type, not the label: clients label JPEG as PNG (3.x models answer JPEG
// labelled image/png, and clients send that answer back), and Google would
// refuse or misread a wrong label. GIF is refused here because Google does
// not take it: better a clear 400 now than Google's after a paid attempt.
func checkImageHead(label string, head []byte) (mime, why string) {
	kind, w, h, ok := imageHeader(head)
	switch {
	case kind == "":
		return "", "its content is not a PNG, JPEG, WebP, HEIC or HEIF image"
	case kind == "image/gif":
		return "", "it is a GIF image, which the model does not take; send PNG, JPEG, WebP, HEIC or HEIF"
	case !ok:
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
	var head [18]byte
	n := min(len(b64), 24)
	n -= n % 4
	m, err := base64.StdEncoding.Decode(head[:], b64[:n])
	if err != nil && m == 0 {
		return ""
	}
	kind, _, _, _ := imageHeader(head[:m])
	return kind
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

// imageHeader reads the kind and the declared dimensions of an image from its
// first bytes. ok is false when the kind is known but the size could not be
// read from what is there; HEIC sizes are not read (w, h = 0, ok true).
func imageHeader(b []byte) (kind string, w, h int, ok bool) {
	switch {
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		if len(b) < 24 || string(b[12:16]) != "IHDR" {
			return "image/png", 0, 0, false
		}
		return "image/png", int(binary.BigEndian.Uint32(b[16:20])), int(binary.BigEndian.Uint32(b[20:24])), true
	case bytes.HasPrefix(b, []byte("\xff\xd8\xff")):
		w, h, ok := jpegSize(b)
		return "image/jpeg", w, h, ok
	case len(b) >= 12 && string(b[:4]) == "RIFF" && string(b[8:12]) == "WEBP":
		w, h, ok := webpSize(b)
		return "image/webp", w, h, ok
	case bytes.HasPrefix(b, []byte("GIF87a")) || bytes.HasPrefix(b, []byte("GIF89a")):
		if len(b) < 10 {
			return "image/gif", 0, 0, false
		}
		return "image/gif", int(binary.LittleEndian.Uint16(b[6:8])), int(binary.LittleEndian.Uint16(b[8:10])), true
	case len(b) >= 12 && string(b[4:8]) == "ftyp":
		switch string(b[8:12]) {
		case "heic", "heix", "hevc", "hevx", "heim", "heis", "mif1", "msf1":
			return "image/heic", 0, 0, true
		}
	}
	return "", 0, 0, false
}

// jpegSize walks the segments to the first frame header (SOFn).
func jpegSize(b []byte) (int, int, bool) {
	i := 2
	for i+4 <= len(b) {
		if b[i] != 0xff {
			return 0, 0, false
		}
		marker := b[i+1]
		if marker == 0xff { // fill byte
			i++
			continue
		}
		if marker == 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker == 0x01 {
			i += 2
			continue
		}
		seg := int(binary.BigEndian.Uint16(b[i+2 : i+4]))
		if seg < 2 {
			return 0, 0, false
		}
		if marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc {
			if i+9 > len(b) {
				return 0, 0, false
			}
			h := int(binary.BigEndian.Uint16(b[i+5 : i+7]))
			w := int(binary.BigEndian.Uint16(b[i+7 : i+9]))
			return w, h, true
		}
		i += 2 + seg
	}
	return 0, 0, false
}

// webpSize reads the lossy (VP8), lossless (VP8L) or extended (VP8X) header.
func webpSize(b []byte) (int, int, bool) {
	if len(b) < 30 {
		return 0, 0, false
	}
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
