package accounting

import "strconv"

// AppendUSD appends micro-dollars as a decimal number of dollars, exactly:
// no float is involved, so 35000000000 is 35000 and 1 is 0.000001. Trailing
// zeros of the fraction are dropped; the result is a valid JSON number.
func AppendUSD(b []byte, micros int64) []byte {
	u := uint64(micros)
	if micros < 0 {
		b = append(b, '-')
		u = -u // two's complement: also right for math.MinInt64
	}
	b = strconv.AppendUint(b, u/1_000_000, 10)
	frac := u % 1_000_000
	if frac == 0 {
		return b
	}
	var digits [7]byte
	digits[0] = '.'
	for i := 6; i >= 1; i-- {
		digits[i] = byte('0' + frac%10)
		frac /= 10
	}
	n := 7
	for digits[n-1] == '0' {
		n--
	}
	return append(b, digits[:n]...)
}

// FormatUSD is AppendUSD as a string.
func FormatUSD(micros int64) string { return string(AppendUSD(nil, micros)) }
