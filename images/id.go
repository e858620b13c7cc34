package images

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
)

// An image id is 32 lower-case hex digits (128 random bits) followed by the
// extension of its type, such as "3f0c…9a1e.png". The extension carries the
// Content-Type, so the filesystem store keeps nothing beside the image, and a
// link names a file a browser or a download keeps with the right type.
//
// Ids that come from outside (a request path, a link sent back as input) are
// checked against exactly this form before anything else happens, so they can
// never name another file: no "..", no "/", no NUL, nothing longer.
const (
	idHexLen = 32
	// maxIDLen is the longest id: 32 hex digits, a dot and a 4-letter
	// extension.
	maxIDLen = idHexLen + 1 + 4
)

// types maps the image types the gateway offloads to their extension. Only
// these are offloaded: a link served from the gateway's own origin must
// never carry a type a browser would run (text/html, image/svg+xml).
var types = []struct{ mime, ext string }{
	{"image/png", "png"},
	{"image/jpeg", "jpg"},
	{"image/webp", "webp"},
	{"image/gif", "gif"},
	{"image/heic", "heic"},
	{"image/heif", "heif"},
	{"image/avif", "avif"},
}

// extOf returns the extension of a MIME type, ignoring case and parameters;
// "" when the type is not offloaded.
func extOf(mime string) string {
	if i := strings.IndexByte(mime, ';'); i >= 0 {
		mime = mime[:i]
	}
	mime = strings.TrimSpace(mime)
	if strings.EqualFold(mime, "image/jpg") { // seen from resellers
		return "jpg"
	}
	for _, t := range types {
		if strings.EqualFold(mime, t.mime) {
			return t.ext
		}
	}
	return ""
}

// mimeOfExt is the MIME type of an extension of the table, "" if none.
func mimeOfExt(ext string) string {
	for _, t := range types {
		if ext == t.ext {
			return t.mime
		}
	}
	return ""
}

// newID returns a fresh random id with the extension ext.
func newID(ext string) string {
	var raw [idHexLen / 2]byte
	rand.Read(raw[:]) // never fails: crypto/rand crashes the program rather than return an error
	var s [maxIDLen]byte
	hex.Encode(s[:idHexLen], raw[:])
	s[idHexLen] = '.'
	n := copy(s[idHexLen+1:], ext)
	return string(s[:idHexLen+1+n])
}

// ValidID reports whether id has exactly the form of an id this package
// generates. It does not say whether the image exists.
func ValidID(id string) bool {
	return mimeOfID(id) != ""
}

// mimeOfID returns the MIME type an id's extension stands for, or "" when
// id is not of the exact form (see the top of this file). It takes bytes too,
// so a request path is checked before it becomes a string.
func mimeOfID[T ~string | ~[]byte](id T) string {
	if len(id) <= idHexLen+1 || len(id) > maxIDLen || id[idHexLen] != '.' {
		return ""
	}
	for i := 0; i < idHexLen; i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ""
		}
	}
	ext := id[idHexLen+1:]
	for _, t := range types {
		if string(ext) == t.ext {
			return t.mime
		}
	}
	return ""
}
