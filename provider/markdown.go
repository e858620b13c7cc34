package provider

import (
	"bytes"
	"strings"

	"nanogate/internal/jsonx"
)

// Resellers return generated images inside the text as markdown:
// "![image](data:image/png;base64,...)". The finder below works on JSON-escaped
// string content so that megabytes of base64 are never unescaped or copied:
// base64 needs no escaping, except "\/" which some JSON encoders emit for "/".

type match int

const (
	noMatch match = iota
	matched
	incomplete
	// broken: the markup of a data-URL image whose data is not an image
	// (answers refuse it; elsewhere it is text).
	broken
)

// matchImage tries to read a markdown data-URL image at raw[i] (which holds
// "!["), or with links a hosted https:// image. It returns the end of the
// image markup and the image.
func matchImage(raw []byte, i int, links bool) (int, Image, match) {
	j, label, m := matchImageStart(raw, i, links)
	if m != matched {
		return 0, Image{}, m
	}
	if label == "" {
		return matchLink(raw, j)
	}
	ds := j
	e := bytes.IndexByte(raw[ds:], ')')
	if e < 0 {
		// No end yet: incomplete if all that came is base64, else broken.
		for ; j < len(raw); j++ {
			c := raw[j]
			if b64Alphabet[c] || c == '=' {
				continue
			}
			if c == '\\' && j+1 < len(raw) && raw[j+1] == '/' {
				j++
				continue
			}
			break
		}
		if j >= len(raw) || (raw[j] == '\\' && j+1 >= len(raw)) {
			return 0, Image{}, incomplete
		}
		return 0, Image{}, broken
	}
	// The data ends at the first ')' (found at the speed of IndexByte):
	// anything but base64 and escaped slashes before it makes it invalid,
	// as it would have stopped a byte-by-byte scan short of the ')'.
	data := raw[ds : ds+e]
	if bytes.IndexByte(data, '\\') >= 0 {
		data = bytes.ReplaceAll(data, []byte(`\/`), []byte("/"))
	}
	if !ValidBase64(data) {
		return 0, Image{}, broken
	}
	return ds + e + 1, Image{MIME: outputMIME(label, data), B64: data}, matched
}

// matchImageStart reads the markup of a markdown image at raw[i] up to
// where its data begins (its base64, or with links a hosted link's
// "https:"), and the media type it is labelled with ("" for a link).
func matchImageStart(raw []byte, i int, links bool) (int, string, match) {
	j := i + 2
	// Alt text: anything up to "](" without a closing bracket or line break.
	for ; j < len(raw); j++ {
		c := raw[j]
		if c == ']' {
			break
		}
		if c == '\\' && j+1 < len(raw) && raw[j+1] == 'n' {
			return 0, "", noMatch
		}
		if j-i > 256 {
			return 0, "", noMatch
		}
	}
	if links && j+2 < len(raw) && raw[j+1] == '(' && raw[j+2] == 'h' {
		return j + 2, "", matched
	}
	const prefix = "](data:"
	for k := 0; k < len(prefix); k++ {
		if j+k >= len(raw) {
			return 0, "", incomplete
		}
		if raw[j+k] != prefix[k] {
			return 0, "", noMatch
		}
	}
	j += len(prefix)
	// Media type, up to ";base64,".
	ms := j
	for ; j < len(raw) && raw[j] != ';'; j++ {
		c := raw[j]
		if !mediaTypeByte(c) || j-ms > 64 {
			return 0, "", noMatch
		}
	}
	if j >= len(raw) {
		return 0, "", incomplete
	}
	mime := mediaType(raw[ms:j])
	if len(mime) < 7 || mime[:6] != "image/" {
		return 0, "", noMatch
	}
	const b64 = ";base64,"
	for k := 0; k < len(b64); k++ {
		if j+k >= len(raw) {
			return 0, "", incomplete
		}
		if raw[j+k] != b64[k] {
			return 0, "", noMatch
		}
	}
	return j + len(b64), mime, matched
}

// mediaTypeByte reports whether c may be part of the media type of a
// markdown data-URL image, JSON-escaped.
func mediaTypeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '/' || c == '\\' || c == '.' ||
		c == '+' || c == '-'
}

// maxLinkBytes bounds a hosted image link: real ones (signed CDN or bucket
// links) are a few hundred bytes.
const maxLinkBytes = 8 << 10

// matchLink reads a hosted image link at raw[j] up to its closing
// parenthesis: "https://...)". Resellers that store their images answer
// such links instead of data URLs; the image was made (and billed) all the
// same, so it counts as one and goes to the client as it is.
func matchLink(raw []byte, j int) (int, Image, match) {
	const scheme = "https:"
	for k := 0; k < len(scheme); k++ {
		if j+k >= len(raw) {
			return 0, Image{}, incomplete
		}
		if raw[j+k] != scheme[k] {
			return 0, Image{}, noMatch
		}
	}
	start := j
	escaped := false
	for ; j < len(raw); j++ {
		c := raw[j]
		if c == ')' {
			break
		}
		if j-start > maxLinkBytes || c <= ' ' || c == '"' || c == '(' || c >= 0x7f {
			return 0, Image{}, noMatch
		}
		if c == '\\' {
			// Escapes in JSON-escaped text: "\/" and "\u0026"-style only;
			// "\n" and the like end the markup without closing it.
			if j+1 >= len(raw) {
				return 0, Image{}, incomplete
			}
			if raw[j+1] != '/' && raw[j+1] != 'u' {
				return 0, Image{}, noMatch
			}
			escaped = true
			j++
		}
	}
	if j >= len(raw) {
		return 0, Image{}, incomplete
	}
	link := string(raw[start:j])
	if escaped {
		u, err := jsonx.Unquote([]byte(`"` + link + `"`))
		if err != nil || strings.ContainsAny(u, " \t\r\n\"") {
			return 0, Image{}, noMatch
		}
		link = u
	}
	if len(link) <= len("https://") || !strings.HasPrefix(link, "https://") {
		return 0, Image{}, noMatch
	}
	return j + 1, Image{URL: link}, matched
}

// segment is a piece of escaped text or an image.
type segment struct {
	text  []byte
	image *Image
}

// scanMarkdown splits raw into text and image segments. When final is false
// it stops before a possible image that is not complete yet and returns how
// many bytes it consumed; the caller keeps the rest and calls again with more.
// With links, hosted https:// images count as images too (answers); without,
// only data URLs do (requests, where an image must be sent as bytes).
func scanMarkdown(raw []byte, final, links bool, out []segment) ([]segment, int) {
	out, n, _ := scanMarkdownCheck(raw, final, links, false, out)
	return out, n
}

// scanMarkdownCheck is scanMarkdown that, with strict, stops at the first
// data-URL image whose markup began (up to ";base64,") but whose data is
// not an image: bad base64, no closing parenthesis, or a header
// checkOutputImage refuses. ok is false then.
func scanMarkdownCheck(raw []byte, final, links, strict bool, out []segment) (_ []segment, consumed int, ok bool) {
	start, i := 0, 0
	for {
		k := bytes.IndexByte(raw[i:], '!')
		if k < 0 {
			break
		}
		i += k
		if i+1 >= len(raw) {
			if !final {
				// A lone "!" may begin an image in the next delta.
				if i > start {
					out = append(out, segment{text: raw[start:i]})
				}
				return out, i, true
			}
			break
		}
		if raw[i+1] != '[' {
			i++
			continue
		}
		end, img, m := matchImage(raw, i, links)
		if strict && (m == broken || m == incomplete && final && dataStarted(raw, i, links)) {
			return out, i, false
		}
		if strict && m == matched && img.B64 != nil {
			if _, why, _ := checkOutputImage(img.MIME, img.B64, true); why != "" {
				return out, i, false
			}
		}
		switch m {
		case matched:
			if i > start {
				out = append(out, segment{text: raw[start:i]})
			}
			out = append(out, segment{image: &img})
			start, i = end, end
			continue
		case incomplete:
			if !final {
				if i > start {
					out = append(out, segment{text: raw[start:i]})
				}
				return out, i, true
			}
		}
		i += 2
	}
	if start < len(raw) {
		out = append(out, segment{text: raw[start:]})
	}
	return out, len(raw), true
}

// dataStarted reports whether the markup at raw[i] is a data-URL image's
// up to its data.
func dataStarted(raw []byte, i int, links bool) bool {
	_, label, m := matchImageStart(raw, i, links)
	return m == matched && label != ""
}

// markdownDataStart reports whether raw, markdown text of an answer read
// from its start or from the end of an image, ends where the data of a
// data-URL image begins (just past ";base64,"), and the media type the
// image is labelled with. resume is where nothing before can still change
// (a scan of more text may start there). segs is scratch space.
func markdownDataStart(raw []byte, segs []segment) (label string, ok bool, resume int, _ []segment) {
	segs, consumed := scanMarkdown(raw, false, true, segs[:0])
	if consumed < len(raw) {
		if ds, l, m := matchImageStart(raw, consumed, true); m == matched && l != "" && ds == len(raw) {
			return l, true, consumed, segs
		}
	}
	return "", false, consumed, segs
}

// splitMarkdown returns the text of raw without its markdown images, and the
// images. Whitespace the markup leaves at the edges of the text is trimmed and
// pieces of text around images are joined by a blank line.
func splitMarkdown(raw []byte) ([]byte, []Image) {
	var ch Choice
	splitMarkdownInto(&ch, raw)
	if len(ch.Images) == 0 {
		return raw, nil
	}
	return ch.Text, ch.Images
}

// splitMarkdownInto adds the text and the markdown images of raw to ch:
// the text to ch.Text (trimmed, runs joined by a blank line), the images to
// ch.Images, and both to ch.Pieces in their order.
func splitMarkdownInto(ch *Choice, raw []byte) {
	segs, _, _ := scanMarkdownCheck(raw, true, true, false, nil)
	addSegments(ch, raw, segs)
}

// splitAnswerMarkdown is splitMarkdownInto for an answer's content: a
// data-URL image whose markup began but whose data is not an image
// (scanMarkdownCheck) makes it false, the answer refused. Its forwarded
// reading cannot make such markup text again: its start went out as an
// image.
func splitAnswerMarkdown(ch *Choice, raw []byte) bool {
	segs, _, ok := scanMarkdownCheck(raw, true, true, true, nil)
	if ok {
		addSegments(ch, raw, segs)
	}
	return ok
}

// addSegments adds the segments of raw to ch.
func addSegments(ch *Choice, raw []byte, segs []segment) {
	images := false
	for _, s := range segs {
		images = images || s.image != nil
	}
	if !images {
		ch.Text = joinText(ch.Text, raw)
		ch.addText(raw)
		return
	}
	for _, s := range segs {
		if s.image != nil {
			ch.addImage(*s.image)
			continue
		}
		if t := trimEscapedSpace(s.text); len(t) > 0 {
			ch.Text = joinText(ch.Text, t)
			ch.addText(t)
		}
	}
}

// trimEscapedSpace trims spaces, tabs and escaped line breaks from both ends.
func trimEscapedSpace(b []byte) []byte {
	for len(b) > 0 {
		switch {
		case b[0] == ' ' || b[0] == '\t':
			b = b[1:]
		case len(b) >= 2 && b[0] == '\\' && (b[1] == 'n' || b[1] == 'r' || b[1] == 't'):
			b = b[2:]
		default:
			goto right
		}
	}
right:
	for len(b) > 0 {
		n := len(b)
		switch {
		case b[n-1] == ' ' || b[n-1] == '\t':
			b = b[:n-1]
		case n >= 2 && b[n-2] == '\\' && (b[n-1] == 'n' || b[n-1] == 'r' || b[n-1] == 't') && (n < 3 || b[n-3] != '\\'):
			b = b[:n-2]
		default:
			return b
		}
	}
	return b
}

// mediaType is a data URL's media type as a string: the usual ones without
// an allocation, and JSON's escaped slash ("image\/png") unescaped.
func mediaType(b []byte) string {
	switch string(b) {
	case "image/png":
		return "image/png"
	case "image/jpeg":
		return "image/jpeg"
	case "image/webp":
		return "image/webp"
	}
	return string(bytes.ReplaceAll(b, []byte(`\/`), []byte("/")))
}
