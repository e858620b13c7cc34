package provider

// CheckImageB64 reads the header of a base64 image declared as label: the
// media type its bytes show, or why it cannot be sent upstream (not an
// image, a type Google refuses, dimensions past the decompression-bomb
// limits). Request parsing (package openai) checks every inline image with
// it before any upstream call.
func CheckImageB64(label string, b64 []byte) (mime, why string) { return checkImageB64(label, b64) }

// ImageKind is the media type an image's first bytes show (PNG, JPEG, WebP,
// GIF, or HEIC for the HEIF family), "" for none of them.
func ImageKind(head []byte) string { return imageKind(head) }
