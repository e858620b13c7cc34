package proxy

import (
	"strings"
	"testing"
)

func TestRequestIDEchoesOnlySaneIDs(t *testing.T) {
	g := newIDGen()
	tests := []struct {
		in   string
		echo bool
	}{
		{"trace-123_abc.def", true},
		{"", false},
		{strings.Repeat("a", 129), false},
		{"has space", false},
		{"quote\"inside", false},
		{"new\nline", false},
		{"ünïcode", false},
	}
	for _, tt := range tests {
		got := g.requestID([]byte(tt.in))
		if (got == tt.in) != tt.echo {
			t.Errorf("requestID(%q) = %q, echo want %v", tt.in, got, tt.echo)
		}
		if !tt.echo && !strings.HasPrefix(got, "req_") {
			t.Errorf("generated id %q", got)
		}
	}
	if a, b := g.next(), g.next(); a == b {
		t.Fatal("ids repeat")
	}
}

func TestJSONContentType(t *testing.T) {
	for ct, want := range map[string]bool{
		"": true, "application/json": true, "application/json; charset=utf-8": true, "Application/JSON": true,
		"application/x-www-form-urlencoded": true, "text/plain": true,
		"multipart/form-data; boundary=x": false, "text/html": false, "application/xml": false,
	} {
		if got := jsonContentType([]byte(ct)); got != want {
			t.Errorf("jsonContentType(%q) = %v, want %v", ct, got, want)
		}
	}
}
