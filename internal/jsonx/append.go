package jsonx

import "unicode/utf8"

// AppendString appends s to dst as a JSON string literal, quotes included,
// byte for byte as a json.Encoder with SetEscapeHTML(false) writes it: '"' and
// '\\' are backslash-escaped, \b \f \n \r \t use their short escapes (as
// encoding/json does since Go 1.22), other control characters become \u00XX,
// each byte of invalid UTF-8 becomes \ufffd, and U+2028 and U+2029 become
// \u2028 and \u2029 so that the output is also safe as JavaScript.
//
// Runs of bytes that need no escaping are copied with one append each, so a
// base64 image costs one scan and one copy; with enough capacity in dst
// nothing is allocated.
func AppendString(dst []byte, s string) []byte {
	return appendString(dst, s)
}

// AppendStringBytes is AppendString for a byte slice, without converting it
// to a string first.
func AppendStringBytes(dst []byte, s []byte) []byte {
	return appendString(dst, s)
}

const hexDigits = "0123456789abcdef"

func appendString[T string | []byte](dst []byte, s T) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; ; {
		i = skipPlain(s, i)
		if i >= len(s) {
			break
		}
		if b := s[i]; b < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		// Converting at most UTFMax bytes to a string keeps the conversion
		// on the stack for []byte, as encoding/json does.
		n := min(len(s)-i, utf8.UTFMax)
		r, size := utf8.DecodeRuneInString(string(s[i : i+n]))
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
