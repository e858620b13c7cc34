package clip

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	short := strings.Repeat("a", Max)
	if got := String(short); got != short {
		t.Fatal("a value of Max bytes was changed")
	}
	for _, in := range []string{
		strings.Repeat("m", 94<<20/3), // the size of the model names that filled the logs
		strings.Repeat("é", Max),      // two-byte characters across the cut
		strings.Repeat("a", Max-4) + "€€€",
		strings.Repeat("a", Max+1),
	} {
		got := String(in)
		if len(got) > Max || !strings.HasSuffix(got, "...") || !utf8.ValidString(got) {
			t.Errorf("String(%d bytes) = %d bytes, valid %v, %q", len(in), len(got), utf8.ValidString(got), got[max(0, len(got)-12):])
		}
		if !strings.HasPrefix(in, strings.TrimSuffix(got, "...")) {
			t.Errorf("String(%d bytes) is not a prefix", len(in))
		}
	}
}

func FuzzString(f *testing.F) {
	f.Add("gemini-2.5-flash-image")
	f.Add(strings.Repeat("\xff", 300))
	f.Fuzz(func(t *testing.T, s string) {
		got := String(s)
		if len(got) > Max {
			t.Fatalf("%d bytes", len(got))
		}
		if len(s) <= Max && got != s {
			t.Fatal("a short value was changed")
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatal("a valid string was cut inside a character")
		}
	})
}
