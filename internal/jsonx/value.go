package jsonx

import (
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// StringBytes returns the contents of the JSON string literal span s (quotes
// included, whitespace around them allowed), decoded as json.Unmarshal into a
// string would decode them.
//
// When the contents need no decoding (no escapes and valid UTF-8) the result
// is the bytes between the quotes, without copying. Otherwise it is the
// decoded bytes appended to dst[:0] (dst may be nil): escapes are resolved,
// \uXXXX surrogate pairs are combined, and lone surrogates and invalid UTF-8
// become U+FFFD, byte for byte as encoding/json does. Anything that is not one
// well-formed string literal is an error.
func StringBytes(dst, s []byte) ([]byte, error) {
	i := SkipWS(s, 0)
	if i >= len(s) {
		return nil, errEnd(i)
	}
	if s[i] != '"' {
		return nil, errChar(s, i, "looking for beginning of string")
	}
	start := i + 1
	for i = start; ; {
		i = skipPlain(s, i)
		if i >= len(s) {
			return nil, errEnd(i)
		}
		c := s[i]
		if c == '"' {
			if err := onlyWS(s, i+1); err != nil {
				return nil, err
			}
			return s[start:i:i], nil
		}
		if c < utf8.RuneSelf {
			break // an escape or a control character
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			break
		}
		i += size
	}
	return unescape(append(dst[:0], s[start:i]...), s, i)
}

// unescape appends the decoded rest of the string literal s, from index i,
// to dst. It is the slow path of StringBytes, entered at the first byte that
// cannot be passed through as it is.
func unescape(dst, s []byte, i int) ([]byte, error) {
	for {
		run := i
		i = skipPlain(s, i)
		dst = append(dst, s[run:i]...)
		if i >= len(s) {
			return nil, errEnd(i)
		}
		switch c := s[i]; {
		case c == '"':
			if err := onlyWS(s, i+1); err != nil {
				return nil, err
			}
			return dst, nil
		case c == '\\':
			if i+1 >= len(s) {
				return nil, errEnd(i + 1)
			}
			switch e := s[i+1]; e {
			case '"', '\\', '/':
				dst = append(dst, e)
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r, err := hex4(s, i+2)
				if err != nil {
					return nil, err
				}
				i += 6
				if utf16.IsSurrogate(r) {
					// Same rule as encoding/json: a surrogate followed by a
					// \u escape that completes a pair is one rune; anything
					// else makes this escape U+FFFD and the next escape is
					// decoded on its own.
					r2 := rune(-1)
					if i+1 < len(s) && s[i] == '\\' && s[i+1] == 'u' {
						r2, _ = hex4(s, i+2)
					}
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						r = dec
						i += 6
					} else {
						r = utf8.RuneError
					}
				}
				dst = utf8.AppendRune(dst, r)
				continue
			default:
				return nil, errChar(s, i+1, "in string escape code")
			}
			i += 2
		case c < 0x20:
			return nil, errChar(s, i, "in string literal")
		default:
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, "\uFFFD"...)
			} else {
				dst = append(dst, s[i:i+size]...)
			}
			i += size
		}
	}
}

// hex4 decodes the four hexadecimal digits at s[i:].
func hex4(s []byte, i int) (rune, error) {
	var r rune
	for k := i; k < i+4; k++ {
		if k >= len(s) {
			return -1, errEnd(k)
		}
		d := hexVal[s[k]]
		if d < 0 {
			return -1, errChar(s, k, "in \\u escape")
		}
		r = r<<4 | rune(d)
	}
	return r, nil
}

// onlyWS reports an error unless s[i:] is whitespace.
func onlyWS(s []byte, i int) error {
	if i = SkipWS(s, i); i != len(s) {
		return errChar(s, i, "after top-level value")
	}
	return nil
}

// Unquote is StringBytes returning a string, which is always a copy.
func Unquote(s []byte) (string, error) {
	// Short escaped strings are decoded on the stack, so the only
	// allocation is the string itself.
	var buf [64]byte
	b, err := StringBytes(buf[:0], s)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// number returns the number span v without its surrounding whitespace, or an
// error if v is not exactly one JSON number.
func number(v []byte) ([]byte, error) {
	v = trimWS(v)
	if len(v) == 0 {
		return nil, errEnd(0)
	}
	end, err := skipNumber(v, 0)
	if err != nil {
		return nil, err
	}
	if end != len(v) {
		return nil, errChar(v, end, "after numeric literal")
	}
	return v, nil
}

// Int parses the number span v as an int64. A fraction or exponent is an
// error even when the value is whole ("1.0", "1e3"): upstream counts are
// written as plain integers, and anything else means the field is not what
// the caller thinks. A value outside int64 is a *strconv.NumError wrapping
// strconv.ErrRange.
func Int(v []byte) (int64, error) {
	v, err := number(v)
	if err != nil {
		return 0, err
	}
	digits, limit := v, uint64(math.MaxInt64)
	if v[0] == '-' {
		digits, limit = v[1:], limit+1
	}
	var n uint64
	for k, c := range digits {
		if !isDigit(c) {
			return 0, syntaxErr(len(v)-len(digits)+k, "number is not an integer")
		}
		d := uint64(c - '0')
		if n > (limit-d)/10 {
			return 0, &strconv.NumError{Func: "Int", Num: string(v), Err: strconv.ErrRange}
		}
		n = n*10 + d
	}
	if v[0] == '-' {
		// Negating in uint64 wraps -(1<<63) to math.MinInt64 as wanted.
		return int64(-n), nil
	}
	return int64(n), nil
}

// Float parses the number span v as a float64. JSON's grammar is checked
// first, so strconv's wider syntax ("0x1p3", "Inf", "1_000") is rejected. A
// magnitude too large for float64 is a *strconv.NumError wrapping
// strconv.ErrRange, as encoding/json also refuses it.
func Float(v []byte) (float64, error) {
	v, err := number(v)
	if err != nil {
		return 0, err
	}
	return strconv.ParseFloat(string(v), 64)
}

// Bool parses the literal span v, which must be true or false.
func Bool(v []byte) (bool, error) {
	switch string(trimWS(v)) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, syntaxErr(SkipWS(v, 0), "not a boolean")
}
