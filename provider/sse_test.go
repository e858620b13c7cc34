package provider

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestSSEReader(t *testing.T) {
	big := strings.Repeat("A", 3<<20) // a 3 MB line: bufio.Scanner's default fails here
	body := "data: one\r\n\r\n: comment\n\nevent: x\ndata: two\ndata: lines\n\ndata: " + big + "\r\n\r\ndata: last"
	r := newSSEReader(iotest.HalfReader(strings.NewReader(body)), 8<<20)
	want := []string{"one", "two\nlines", big, "last"}
	for i, w := range want {
		got, err := r.Next()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if string(got) != w {
			t.Fatalf("event %d = %.40q (len %d), want %.40q (len %d)", i, got, len(got), w, len(w))
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("after last event: %v, want EOF", err)
	}
}

func TestSSEReaderCap(t *testing.T) {
	r := newSSEReader(strings.NewReader("data: "+strings.Repeat("A", 1<<20)+"\n\n"), 64<<10)
	if _, err := r.Next(); err != ErrEventTooLarge {
		t.Fatalf("err = %v, want ErrEventTooLarge", err)
	}
}

func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("data: a\n\ndata: b\r\n\r\n"))
	f.Add([]byte("data:x\ndata:y\n\n\n\ndata: [DONE]"))
	f.Fuzz(func(t *testing.T, body []byte) {
		r := newSSEReader(bytes.NewReader(body), 1<<16)
		for i := 0; i < len(body)+2; i++ {
			ev, err := r.Next()
			if err != nil {
				return
			}
			if len(ev) > len(body) {
				t.Fatalf("event longer than the body")
			}
		}
		t.Fatalf("reader did not end")
	})
}
