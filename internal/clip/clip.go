// Package clip bounds what a client sent before it is echoed into a log line
// or an error message. A model name or a parameter value can be megabytes
// long, and each echo would copy all of it into the log or the answer.
package clip

import "unicode/utf8"

// Max is the most bytes of a client's value that are echoed.
const Max = 256

// marker ends a clipped value, so a reader knows there was more.
const marker = "..."

// String returns s when it is at most Max bytes, else its start cut on a
// character boundary and followed by "...", Max bytes at most in all. A
// short s is returned as is, without a copy.
func String(s string) string { return To(s, Max) }

// To is String with a bound of n bytes (at least len("...")): for a message
// that may hold several echoed values.
func To(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n -= len(marker)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + marker
}
