package jsonx

// SkipValue returns the index just past the JSON value that starts at data[i],
// after any whitespace there.
//
// It checks the value as strictly as a parser would, so that a truncated or
// garbage body is an error rather than a wrong span: strings must be closed and
// free of raw control characters, escapes must be valid, numbers must follow
// JSON's grammar and be followed by whitespace, ',', ']', '}' or the end of
// data (so "01" and "truex" are errors), brackets must balance and commas and
// colons sit where they belong. Nesting deeper than MaxDepth is an error. It
// does not check UTF-8, as encoding/json's scanner does not either.
//
// Nothing after the value is looked at: SkipValue(`{} x`, 0) is 2, nil. Use
// Valid for a whole document.
func SkipValue(data []byte, i int) (int, error) {
	if i < 0 || i > len(data) {
		return i, syntaxErr(i, "offset out of range")
	}
	i = SkipWS(data, i)
	if i >= len(data) {
		return i, errEnd(i)
	}
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		return skipContainer(data, i)
	default:
		return skipScalar(data, i)
	}
}

// Valid reports whether data is exactly one JSON value with only whitespace
// around it. It agrees with json.Valid, including on invalid UTF-8 inside
// strings (accepted) and on the depth limit.
func Valid(data []byte) bool {
	end, err := SkipValue(data, 0)
	return err == nil && SkipWS(data, end) == len(data)
}

// skipContainer skips the array or object that starts at data[i].
//
// It walks the brackets with an explicit stack instead of recursing, so that
// a document of 100k '[' costs a bounded array on the stack and an error, not
// a goroutine stack grown by megabytes.
func skipContainer(data []byte, i int) (int, error) {
	// Real documents nest a few levels: one word of stack covers 64, and
	// only deeper ones pay for zeroing the array that covers MaxDepth.
	var stack [1]uint64
	return skipNested(data, i, stack[:], MaxDepth)
}

// skipDeep skips the container at data[i], which is 64 levels down, allowing
// budget more levels. Its stack has room for all of them, so the recursion
// stops here.
func skipDeep(data []byte, i int, budget int) (int, error) {
	var stack [MaxDepth/64 + 1]uint64
	return skipNested(data, i, stack[:], budget)
}

// skipNested skips the container at data[i], allowing budget levels of
// nesting and keeping one bit per open level in stack (set for an object).
func skipNested(data []byte, i int, stack []uint64, budget int) (int, error) {
	depth := 0
	var err error
	for {
		// Here i is at the first byte of a value.
		if i >= len(data) {
			return i, errEnd(i)
		}
		switch c := data[i]; c {
		case '{', '[':
			if depth == budget {
				return i, syntaxErr(i, "nesting deeper than MaxDepth")
			}
			if depth == len(stack)*64 {
				// Out of bits: the whole subtree is one value to this level.
				if i, err = skipDeep(data, i, budget-depth); err != nil {
					return i, err
				}
				break
			}
			if c == '{' {
				stack[depth>>6] |= 1 << (depth & 63)
			} else {
				stack[depth>>6] &^= 1 << (depth & 63)
			}
			depth++
			i = SkipWS(data, i+1)
			if i < len(data) && data[i] == c+2 { // '}' is '{'+2, ']' is '['+2
				i++
				depth--
				break // an empty container is a complete value
			}
			if c == '{' {
				if i, err = skipKey(data, i); err != nil {
					return i, err
				}
			}
			continue
		case '"':
			i, err = skipString(data, i)
		default:
			i, err = skipScalar(data, i)
		}
		if err != nil {
			return i, err
		}
		// A value is complete: close containers until one continues with ','.
		for {
			if depth == 0 {
				return i, nil
			}
			i = SkipWS(data, i)
			if i >= len(data) {
				return i, errEnd(i)
			}
			inObject := stack[(depth-1)>>6]&(1<<((depth-1)&63)) != 0
			c := data[i]
			if c == ',' {
				i = SkipWS(data, i+1)
				if inObject {
					if i, err = skipKey(data, i); err != nil {
						return i, err
					}
				}
				break
			}
			if inObject && c == '}' || !inObject && c == ']' {
				i++
				depth--
				continue
			}
			if inObject {
				return i, errChar(data, i, "after object member")
			}
			return i, errChar(data, i, "after array element")
		}
	}
}

// skipKey skips an object key and its colon, returning the index of the value.
func skipKey(data []byte, i int) (int, error) {
	if i >= len(data) {
		return i, errEnd(i)
	}
	if data[i] != '"' {
		return i, errChar(data, i, "looking for object key")
	}
	i, err := skipString(data, i)
	if err != nil {
		return i, err
	}
	i = SkipWS(data, i)
	if i >= len(data) {
		return i, errEnd(i)
	}
	if data[i] != ':' {
		return i, errChar(data, i, "after object key")
	}
	return SkipWS(data, i+1), nil
}

// skipString returns the index just past the string literal whose opening
// quote is data[i], checking escapes and control characters but not UTF-8.
func skipString(data []byte, i int) (int, error) {
	i++
	for {
		i = skipRaw(data, i)
		if i >= len(data) {
			return i, errEnd(i)
		}
		switch data[i] {
		case '"':
			return i + 1, nil
		case '\\':
			n, err := escapeLen(data, i)
			if err != nil {
				return i, err
			}
			i += n
		default:
			return i, errChar(data, i, "in string literal")
		}
	}
}

// escapeLen returns the length of the escape sequence at data[i] ('\\').
func escapeLen(data []byte, i int) (int, error) {
	if i+1 >= len(data) {
		return 0, errEnd(len(data))
	}
	switch data[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2, nil
	case 'u':
		for k := i + 2; k < i+6; k++ {
			if k >= len(data) {
				return 0, errEnd(k)
			}
			if hexVal[data[k]] < 0 {
				return 0, errChar(data, k, "in \\u escape")
			}
		}
		return 6, nil
	default:
		return 0, errChar(data, i+1, "in string escape code")
	}
}

// skipScalar skips the number or literal at data[i] and checks the byte after
// it (see endsScalar).
func skipScalar(data []byte, i int) (int, error) {
	var end int
	var err error
	switch c := data[i]; {
	case c == 't':
		end, err = skipLiteral(data, i, "true")
	case c == 'f':
		end, err = skipLiteral(data, i, "false")
	case c == 'n':
		end, err = skipLiteral(data, i, "null")
	case c == '-' || isDigit(c):
		end, err = skipNumber(data, i)
	default:
		return i, errChar(data, i, "looking for beginning of value")
	}
	if err != nil {
		return end, err
	}
	if end < len(data) && !endsScalar[data[end]] {
		return end, errChar(data, end, "after value")
	}
	return end, nil
}

func skipLiteral(data []byte, i int, lit string) (int, error) {
	for k := 1; k < len(lit); k++ {
		if i+k >= len(data) {
			return i + k, errEnd(i + k)
		}
		if data[i+k] != lit[k] {
			return i + k, errChar(data, i+k, "in literal "+lit)
		}
	}
	return i + len(lit), nil
}

// skipNumber skips -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at data[i].
func skipNumber(data []byte, i int) (int, error) {
	if i < len(data) && data[i] == '-' {
		i++
	}
	if i >= len(data) {
		return i, errEnd(i)
	}
	switch c := data[i]; {
	case c == '0':
		i++
	case '1' <= c && c <= '9':
		i = skipDigits(data, i+1)
	default:
		return i, errChar(data, i, "in numeric literal")
	}
	var err error
	if i < len(data) && data[i] == '.' {
		if i, err = someDigits(data, i+1); err != nil {
			return i, err
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i, err = someDigits(data, i); err != nil {
			return i, err
		}
	}
	return i, nil
}

// someDigits skips one or more digits: a fraction or an exponent needs one.
func someDigits(data []byte, i int) (int, error) {
	if i >= len(data) {
		return i, errEnd(i)
	}
	if !isDigit(data[i]) {
		return i, errChar(data, i, "in numeric literal")
	}
	return skipDigits(data, i+1), nil
}

func skipDigits(data []byte, i int) int {
	for i < len(data) && isDigit(data[i]) {
		i++
	}
	return i
}
