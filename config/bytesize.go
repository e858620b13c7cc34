package config

import (
	"errors"
	"math"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// ByteSize is a number of bytes written as an integer or with a unit:
// 512MiB, 1.5GiB, 200MB, 64KiB (KB/MB/GB are powers of 1000, KiB/MiB/GiB
// of 1024; B or no unit are bytes).
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   float64
}{
	// Longest suffixes first, so that "MiB" is not read as "B".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

var errByteSize = errors.New(`must be a number of bytes, like 536870912 or "512MiB"`)

// ParseByteSize reads s as a ByteSize; negative, fractional bytes and
// values beyond int64 are refused.
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	mult := 1.0
	for _, u := range byteUnits {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	if s == "" {
		return 0, errByteSize
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && mult == 1 {
		if n < 0 {
			return 0, errByteSize
		}
		return ByteSize(n), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || !(f >= 0) {
		return 0, errByteSize
	}
	v := f * mult
	if v >= math.MaxInt64 || v != math.Trunc(v) {
		return 0, errByteSize
	}
	return ByteSize(v), nil
}

// UnmarshalYAML accepts an integer or a string with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// String writes the size with the largest binary unit that divides it.
func (b ByteSize) String() string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && int64(b)%u.mult == 0 {
			return strconv.FormatInt(int64(b)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10)
}
