package config

import (
	"strings"
	"testing"
)

func TestParseByteSize(t *testing.T) {
	good := map[string]ByteSize{
		"0": 0, "536870912": 512 << 20, "512MiB": 512 << 20, "1.5GiB": 3 << 29, "200MB": 200e6,
		"64KiB": 64 << 10, "10B": 10, " 2 GiB ": 2 << 30, "8EiB": 0,
	}
	delete(good, "8EiB")
	for in, want := range good {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "-1MiB", "1.5", "0.3B", "NaN", "NaNMiB", "Inf GiB", "abc", "9223372036854775808",
		"8388608TiB", "1e30", "MiB"} {
		if got, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestByteSizeString(t *testing.T) {
	for in, want := range map[ByteSize]string{0: "0", 512 << 20: "512MiB", 3 << 29: "1536MiB", 1000: "1000", 2 << 30: "2GiB"} {
		if got := in.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int64(in), got, want)
		}
	}
}

func TestMemoryLimitInYAML(t *testing.T) {
	cfg, err := parseForTest(t, "server:\n  memory_limit: 512MiB\n  max_bytes_in_flight: 100000000\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.MemoryLimit != 512<<20 || cfg.Server.MaxBytesInFlight != 100000000 {
		t.Fatalf("got %d, %d", cfg.Server.MemoryLimit, cfg.Server.MaxBytesInFlight)
	}
	_, err = parseForTest(t, "server:\n  memory_limit: lots\n")
	if err == nil || !strings.Contains(err.Error(), "server.memory_limit") {
		t.Fatalf("a bad size gives %v, want an error naming server.memory_limit", err)
	}
}

func parseForTest(t *testing.T, extra string) (*Config, error) {
	t.Helper()
	cfg, _, err := Parse([]byte(catalogBase+extra), "cfg.yaml", env(nil))
	return cfg, err
}
