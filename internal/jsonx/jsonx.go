// Package jsonx scans and writes JSON without decoding whole documents.
//
// Upstream image responses carry base64 images of several megabytes inside
// JSON. Decoding them with encoding/json copies and re-validates every byte of
// every image through reflection; this package instead finds the bounds of
// values (spans: subslices of the input) so that the gateway can look at the
// few small members it needs and pass the big strings through untouched.
//
// Spans returned by this package alias the input and have their capacity cut
// at their end, so appending to one never overwrites the document. Functions
// that take a value span accept JSON whitespace around it.
//
// Nothing here allocates on the success path except where a result has to be
// built (escaped strings, escaped object keys, Unquote's string), which the
// benchmarks check with ReportAllocs.
package jsonx

import "strconv"

// MaxDepth is the deepest nesting of arrays and objects that SkipValue
// accepts. It equals encoding/json's limit, so Valid and json.Valid agree on
// deep documents; the bound keeps a hostile body of 100k brackets from costing
// more than a fixed amount of memory.
const MaxDepth = 10000

// Kind is the type of a JSON value, as told by its first byte.
type Kind uint8

// The kinds of JSON values. Invalid is the zero Kind, so a span that is empty
// or starts with a byte no value can start with is never mistaken for one.
// The kind of true and false is Boolean, not Bool, because Bool is the
// function that parses them and Go has one namespace for both.
const (
	Invalid Kind = iota
	Null
	Boolean
	Number
	String
	Array
	Object
)

var kindNames = [...]string{"invalid", "null", "boolean", "number", "string", "array", "object"}

// String returns the lower-case name of k, as JSON Schema spells the types.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// KindOf returns the kind of the value span v from its first non-whitespace
// byte. It does not validate the rest of v: a Kind is a promise about what the
// value would be, and the parsing functions report whether it really is.
func KindOf(v []byte) Kind {
	i := SkipWS(v, 0)
	if i >= len(v) {
		return Invalid
	}
	switch c := v[i]; c {
	case 'n':
		return Null
	case 't', 'f':
		return Boolean
	case '"':
		return String
	case '[':
		return Array
	case '{':
		return Object
	default:
		if c == '-' || isDigit(c) {
			return Number
		}
		return Invalid
	}
}

// SkipWS returns the index of the first byte at or after i that is not JSON
// whitespace (space, tab, newline, carriage return), or len(data).
func SkipWS(data []byte, i int) int {
	for i < len(data) && isSpace[data[i]] {
		i++
	}
	return i
}

// SyntaxError reports JSON that is malformed, truncated or nested deeper than
// MaxDepth. Callers that only need to know that the input was bad can treat
// every error from this package alike; errors.As gives the offset for logs.
type SyntaxError struct {
	// Offset is the index into the input at which the problem was detected.
	Offset int
	// Msg describes the problem.
	Msg string
}

// Error implements error.
func (e *SyntaxError) Error() string {
	return "jsonx: " + e.Msg + " at offset " + strconv.Itoa(e.Offset)
}

func syntaxErr(off int, msg string) error {
	return &SyntaxError{Offset: off, Msg: msg}
}

// errEnd is the error for input that stops before its value is complete; it
// is the error a truncated upstream body produces, so it gets one wording.
func errEnd(off int) error {
	return syntaxErr(off, "unexpected end of JSON input")
}

// errChar reports an unexpected byte, quoted so that control bytes are legible.
func errChar(data []byte, off int, context string) error {
	return syntaxErr(off, "invalid character "+strconv.QuoteRune(rune(data[off]))+" "+context)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// trimWS removes JSON whitespace from both ends of v.
func trimWS(v []byte) []byte {
	v = v[SkipWS(v, 0):]
	for len(v) > 0 && isSpace[v[len(v)-1]] {
		v = v[:len(v)-1]
	}
	return v
}

// Lookup tables indexed by byte. A table lookup is one load with no branches
// on the byte value, which is what the per-byte loops below are made of.
var (
	isSpace [256]bool
	// rawSafe: bytes that need no attention inside a string when only
	// validating structure (SkipValue): all but '"', '\\' and controls.
	rawSafe [256]bool
	// plainSafe: bytes that can be copied or returned as they are when a
	// string is decoded or encoded: rawSafe minus non-ASCII, whose UTF-8 has
	// to be checked (and U+2028/U+2029 escaped on output).
	plainSafe [256]bool
	// endsScalar: bytes that may follow a number or literal. Without this
	// check "01" or "truex" would pass as a value followed by garbage, and a
	// caller skipping one value would not see that the token was malformed.
	endsScalar [256]bool
	// hexVal maps hexadecimal digits to their value and everything else to -1.
	hexVal [256]int8
)

func init() {
	for _, c := range []byte(" \t\n\r") {
		isSpace[c] = true
		endsScalar[c] = true
	}
	for _, c := range []byte(",]}") {
		endsScalar[c] = true
	}
	for c := 0x20; c < 256; c++ {
		if c != '"' && c != '\\' {
			rawSafe[c] = true
			plainSafe[c] = c < 0x80
		}
	}
	for c := range hexVal {
		switch {
		case '0' <= c && c <= '9':
			hexVal[c] = int8(c - '0')
		case 'a' <= c && c <= 'f':
			hexVal[c] = int8(c - 'a' + 10)
		case 'A' <= c && c <= 'F':
			hexVal[c] = int8(c - 'A' + 10)
		default:
			hexVal[c] = -1
		}
	}
}

// Word-at-a-time scanning of string bodies. Base64 images are megabytes of
// bytes that need no attention, so the scanners test two 8-byte words per
// step and fall back to the tables only near a byte that matters. The tests
// below are the classic "has zero byte" and "has byte less than n" bit
// tricks: exact as to whether any byte matches, which is all the loops need.
const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// stopRaw has the high bit set in some byte when any byte of x is '"',
// '\\' or below 0x20 (other bits are noise: callers mask with msb).
//
// Flipping bit 1 maps '"' (0x22) to 0x20 and keeps 0x00-0x1f below 0x20
// while moving 0x20 and 0x21 up to 0x22 and 0x23, so one "less than 0x21"
// test finds both the quote and the control characters.
func stopRaw(x uint64) uint64 {
	q := x ^ (lsb * 0x02)
	b := x ^ (lsb * '\\')
	return ((q - lsb*0x21) &^ q) | ((b - lsb) &^ b)
}

// stopPlain is non-zero when stopRaw is, or when any byte is non-ASCII.
func stopPlain(x uint64) uint64 {
	return (stopRaw(x) | x) & msb
}

// load64 reads s[:8] little-endian; the compiler merges the byte loads
// into one, for strings as well as slices (encoding/binary takes only slices).
func load64[T string | []byte](s T) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// skipRaw returns the index of the first byte at or after i that is '"',
// '\\' or a control character, or len(data).
func skipRaw(data []byte, i int) int {
	// Slicing the rest, rather than indexing from i, lets the compiler see
	// that every load is in bounds.
	d := data[i:]
	for len(d) >= 16 {
		if (stopRaw(load64(d))|stopRaw(load64(d[8:])))&msb != 0 {
			break
		}
		d = d[16:]
	}
	i = len(data) - len(d)
	for i < len(data) && rawSafe[data[i]] {
		i++
	}
	return i
}

// skipPlain returns the index of the first byte at or after i that plainSafe
// rejects, or len(s).
func skipPlain[T string | []byte](s T, i int) int {
	d := s[i:]
	for len(d) >= 16 {
		if stopPlain(load64(d))|stopPlain(load64(d[8:])) != 0 {
			break
		}
		d = d[16:]
	}
	i = len(s) - len(d)
	for i < len(s) && plainSafe[s[i]] {
		i++
	}
	return i
}
