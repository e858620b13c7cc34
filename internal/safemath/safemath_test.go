package safemath

import (
	"math"
	"math/big"
	"testing"
)

// extremes are the values where wrapping arithmetic goes wrong.
var extremes = []int64{0, 1, -1, 2, -2, 3, 1290, math.MaxInt32, math.MinInt32,
	1 << 31, 1 << 32, 3037000499, 3037000500, -3037000500, 1<<62 - 1, 1 << 62, -(1 << 62),
	3*(1<<61) - 1290, math.MaxInt64 - 1, math.MaxInt64, math.MinInt64 + 1, math.MinInt64}

// want is the exact result saturated to int64.
func want(x *big.Int) int64 {
	if x.Cmp(big.NewInt(math.MaxInt64)) > 0 {
		return math.MaxInt64
	}
	if x.Cmp(big.NewInt(math.MinInt64)) < 0 {
		return math.MinInt64
	}
	return x.Int64()
}

func TestExtremePairsSaturateToTheExactResult(t *testing.T) {
	for _, a := range extremes {
		for _, b := range extremes {
			A, B := big.NewInt(a), big.NewInt(b)
			if got, w := Add(a, b), want(new(big.Int).Add(A, B)); got != w {
				t.Errorf("Add(%d, %d) = %d, want %d", a, b, got, w)
			}
			if got, w := Sub(a, b), want(new(big.Int).Sub(A, B)); got != w {
				t.Errorf("Sub(%d, %d) = %d, want %d", a, b, got, w)
			}
			if got, w := Mul(a, b), want(new(big.Int).Mul(A, B)); got != w {
				t.Errorf("Mul(%d, %d) = %d, want %d", a, b, got, w)
			}
		}
	}
}

func TestSumAndClamp(t *testing.T) {
	if got := Sum(math.MaxInt64, 1, -5); got != math.MaxInt64-5 {
		// Saturation is sticky per step: MaxInt64+1 stops at MaxInt64,
		// then -5 comes off it.
		t.Errorf("Sum = %d", got)
	}
	if got := Sum(); got != 0 {
		t.Errorf("Sum() = %d", got)
	}
	for _, c := range []struct{ x, lo, hi, want int64 }{
		{5, 0, 10, 5}, {-1, 0, 10, 0}, {11, 0, 10, 10},
		{math.MinInt64, 0, math.MaxInt64, 0}, {math.MaxInt64, 0, 32768, 32768}, {7, 9, 3, 9},
	} {
		if got := Clamp(c.x, c.lo, c.hi); got != c.want {
			t.Errorf("Clamp(%d, %d, %d) = %d, want %d", c.x, c.lo, c.hi, got, c.want)
		}
	}
}

func FuzzArithmeticMatchesBigInt(f *testing.F) {
	for _, a := range extremes {
		f.Add(a, a)
		f.Add(a, int64(-1))
	}
	f.Fuzz(func(t *testing.T, a, b int64) {
		A, B := big.NewInt(a), big.NewInt(b)
		if got, w := Add(a, b), want(new(big.Int).Add(A, B)); got != w {
			t.Fatalf("Add(%d, %d) = %d, want %d", a, b, got, w)
		}
		if got, w := Sub(a, b), want(new(big.Int).Sub(A, B)); got != w {
			t.Fatalf("Sub(%d, %d) = %d, want %d", a, b, got, w)
		}
		if got, w := Mul(a, b), want(new(big.Int).Mul(A, B)); got != w {
			t.Fatalf("Mul(%d, %d) = %d, want %d", a, b, got, w)
		}
	})
}
