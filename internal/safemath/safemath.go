// Package safemath is integer arithmetic that saturates instead of wrapping.
//
// Tokens and money come from numbers the gateway does not control (client
// fields, upstream usage, configuration), so every sum or product of them
// that decides a limit, a reservation or a bill goes through these helpers:
// a result that would leave int64 stops at its bound, where it is refused or
// billed as the most it can be, never wrapped to a small or negative value.
package safemath

import "math"

// Add returns a+b, or the bound of int64 it would pass.
func Add(a, b int64) int64 {
	s := a + b
	// Overflow happens only when both operands have the sign the sum lacks.
	if (a > 0 && b > 0 && s < 0) || (a < 0 && b < 0 && s >= 0) {
		if a > 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return s
}

// Sub returns a-b, or the bound of int64 it would pass.
func Sub(a, b int64) int64 {
	if b == math.MinInt64 {
		if a >= 0 {
			return math.MaxInt64
		}
		return a - b // a < 0: a - MinInt64 = a + 2^63 fits
	}
	return Add(a, -b)
}

// Mul returns a×b, or the bound of int64 it would pass.
func Mul(a, b int64) int64 {
	if a == 0 || b == 0 {
		return 0
	}
	p := a * b
	if p/b == a && !(a == -1 && b == math.MinInt64) && !(b == -1 && a == math.MinInt64) {
		return p
	}
	if (a > 0) == (b > 0) {
		return math.MaxInt64
	}
	return math.MinInt64
}

// Sum adds xs with Add.
func Sum(xs ...int64) int64 {
	var s int64
	for _, x := range xs {
		s = Add(s, x)
	}
	return s
}

// Clamp returns x bounded to [lo, hi]; lo wins when lo > hi.
func Clamp(x, lo, hi int64) int64 {
	return max(lo, min(x, hi))
}
