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

// readAllEvents reads every event of body with NextReader, each event's
// data through a reader of its own pace.
func readAllEvents(body io.Reader, max int, pace func(io.Reader) io.Reader) ([]string, error) {
	r := newSSEReader(body, max)
	var out []string
	for {
		ev, err := r.NextReader()
		if err != nil {
			return out, err
		}
		b, err := io.ReadAll(pace(ev))
		if err != nil {
			return out, err
		}
		out = append(out, string(b))
	}
}

func TestSSEReaderStreamingMode(t *testing.T) {
	big := strings.Repeat("A", 3<<20)
	body := "data: one\r\n\r\n: comment\n\nevent: x\ndata: two\ndata: lines\n\ndata: " + big + "\r\n\r\n" +
		"data:\r\ndata:x\r\ny\n\ndata: a\rb\r\n\r\ndata: last\r"
	want := []string{"one", "two\nlines", big, "\nx", "a\rb", "last"}
	paces := map[string]func(io.Reader) io.Reader{
		"as is": func(r io.Reader) io.Reader { return r }, "one byte": iotest.OneByteReader, "half": iotest.HalfReader,
	}
	for name, pace := range paces {
		got, err := readAllEvents(iotest.HalfReader(strings.NewReader(body)), 8<<20, pace)
		if err != io.EOF {
			t.Fatalf("%s: err %v after %d events", name, err, len(got))
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d events, want %d", name, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s: event %d = %.40q (len %d), want %.40q (len %d)", name, i, got[i], len(got[i]), want[i], len(want[i]))
			}
		}
	}
	// An event left unread is skipped.
	r := newSSEReader(strings.NewReader(body), 8<<20)
	for range 2 {
		if _, err := r.NextReader(); err != nil {
			t.Fatal(err)
		}
	}
	ev, _ := r.NextReader()
	if b, _ := io.ReadAll(ev); string(b) != big {
		t.Fatalf("third event after two unread: %.40q", b)
	}
}

// TestSSEReaderStreamingHoldsNoEvent: an event of megabytes goes through a
// reader whose buffers stay at their size.
func TestSSEReaderStreamingHoldsNoEvent(t *testing.T) {
	body := "data: " + strings.Repeat("A", 3<<20) + "\n\n"
	r := newSSEReader(strings.NewReader(body), 8<<20)
	ev, err := r.NextReader()
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, ev)
	if err != nil || n != 3<<20 {
		t.Fatalf("copied %d: %v", n, err)
	}
	if cap(r.data)+cap(r.line) != 0 || r.br.Size() != 64<<10 {
		t.Fatalf("buffers grew: data %d, line %d, bufio %d", cap(r.data), cap(r.line), r.br.Size())
	}
}

func TestSSEReaderStreamingCapAndCut(t *testing.T) {
	r := newSSEReader(strings.NewReader("data: "+strings.Repeat("A", 1<<20)+"\n\n"), 64<<10)
	ev, err := r.NextReader()
	if err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(io.Discard, ev); err != ErrEventTooLarge || n > 64<<10 {
		t.Fatalf("read %d, err %v, want ErrEventTooLarge within the cap", n, err)
	}
	if _, err := r.NextReader(); err != ErrEventTooLarge {
		t.Fatalf("next event: %v", err)
	}
	// A comment line over the cap fails as in Next.
	r = newSSEReader(strings.NewReader(": "+strings.Repeat("A", 1<<20)+"\n\ndata: x\n\n"), 64<<10)
	if _, err := r.NextReader(); err != ErrEventTooLarge {
		t.Fatalf("long comment: %v", err)
	}
	// A body cut by the connection reports the connection's error.
	r = newSSEReader(io.MultiReader(strings.NewReader("data: abc"), iotest.ErrReader(io.ErrUnexpectedEOF)), 64<<10)
	ev, _ = r.NextReader()
	if _, err := io.ReadAll(ev); err != io.ErrUnexpectedEOF {
		t.Fatalf("cut: %v", err)
	}
}

// TestSSEReaderStreamingDoesNotWait: the end of an event is seen as soon
// as its blank line arrives, without waiting for the next event.
func TestSSEReaderStreamingDoesNotWait(t *testing.T) {
	pr, pw := io.Pipe()
	go pw.Write([]byte("data: {\"a\":1}\r\n\r\n"))
	r := newSSEReader(pr, 1<<20)
	ev, err := r.NextReader()
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(ev)
	if err != nil || string(b) != `{"a":1}` {
		t.Fatalf("%q, %v", b, err)
	}
	pw.Close()
	if _, err := r.NextReader(); err != io.EOF {
		t.Fatalf("after the body: %v", err)
	}
}

// FuzzSSEReaderModes: both modes read the same events from any body.
func FuzzSSEReaderModes(f *testing.F) {
	f.Add([]byte("data: a\n\ndata: b\r\n\r\n"), uint8(3))
	f.Add([]byte("data:x\ndata:y\n\n\n\ndata: [DONE]"), uint8(1))
	f.Add([]byte(": c\r\nevent: e\r\ndata: {\r\ndata:\r\r\n\r\ndata: \r"), uint8(2))
	f.Fuzz(func(t *testing.T, body []byte, chunk uint8) {
		const max = 64
		r := newSSEReader(bytes.NewReader(body), max)
		var want []string
		var werr error
		for {
			ev, err := r.Next()
			if err != nil {
				werr = err
				break
			}
			want = append(want, string(ev))
		}
		got, gerr := readAllEvents(&chunked{b: body, n: int(chunk%16) + 1}, max, iotest.OneByteReader)
		if (werr == ErrEventTooLarge) != (gerr == ErrEventTooLarge) {
			// The modes count a line against the cap at different points;
			// both fail near it.
			if len(body) < max-8 {
				t.Fatalf("cap: Next %v, NextReader %v", werr, gerr)
			}
			return
		}
		if werr == ErrEventTooLarge {
			return
		}
		if gerr != werr || len(got) != len(want) {
			t.Fatalf("NextReader %q (%v), Next %q (%v)", got, gerr, want, werr)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("event %d: NextReader %q, Next %q", i, got[i], want[i])
			}
		}
	})
}
