package provider

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
)

// ErrEventTooLarge is returned for an SSE event over the reader's cap.
var ErrEventTooLarge = errors.New("sse event too large")

// sseReader reads server-sent events whose data may be megabytes on one line
// (an image event). bufio.Scanner's 64 KiB token limit fails on those, so lines
// are read with ReadSlice and only copied when they span buffer refills.
type sseReader struct {
	br   *bufio.Reader
	data []byte // data of the current event, reused
	line []byte // a line longer than the bufio buffer, reused
	long bool   // the last line read is in line
	max  int

	// The reading mode of NextReader: the current event's data is read
	// from br as it comes.
	ev sseEvent
}

// sseEvent is where NextReader's reader stands in the current event.
type sseEvent struct {
	n      int  // data bytes handed out
	inData bool // inside a data line's value
	joined bool // a data line was read: the next one is joined with "\n"
	ended  bool // the event ended (blank line or end of body)
	open   bool // a reader of the event was handed out
	err    error
}

func newSSEReader(r io.Reader, max int) *sseReader {
	return &sseReader{br: bufio.NewReaderSize(r, 64<<10), max: max}
}

// Next returns the data of the next event (several data: lines joined by
// "\n"). Events are separated by a blank line, whatever the line ending.
// Comments, event:, id: and retry: lines are skipped. The slice is valid until
// the next call. At the end of the body it returns io.EOF, or
// io.ErrUnexpectedEOF when the body ends inside an event.
func (s *sseReader) Next() ([]byte, error) {
	s.data = s.data[:0]
	have := false
	for {
		line, err := s.readLine()
		if err != nil && err != io.EOF {
			return nil, err
		}
		if len(line) == 0 {
			if have {
				return s.data, nil
			}
			if err == io.EOF {
				return nil, io.EOF
			}
			continue
		}
		if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			if len(v) > 0 && v[0] == ' ' {
				v = v[1:]
			}
			if have {
				s.data = append(s.data, '\n')
			}
			if len(s.data)+len(v) > s.max {
				return nil, ErrEventTooLarge
			}
			if !have && s.long {
				// The line already sits in a buffer of its own: keep it
				// instead of copying megabytes of image once more.
				off := len(line) - len(v)
				buf := s.line
				s.line = s.data[:0]
				s.data = buf[off : off+len(v)]
			} else {
				s.data = append(s.data, v...)
			}
			have = true
		}
		if err == io.EOF {
			if have {
				// The body ended without a blank line after the last
				// event: Google's streams do that; the event is whole.
				return s.data, nil
			}
			return nil, io.EOF
		}
	}
}

// NextReader moves to the next event and returns its data as a reader:
// the reading mode in which an event of megabytes on one line is handed on
// as it arrives instead of held whole. The reader reads from the SSE
// reader's own buffer, so it is valid until the next call; what it did not
// read of its event is skipped then. It hands out what Next would return
// for the event (data lines joined by "\n", whatever the line ending), then
// io.EOF; past the cap, ErrEventTooLarge. At the end of the body
// NextReader returns io.EOF. A reader is used in one mode: Next or
// NextReader.
func (s *sseReader) NextReader() (io.Reader, error) {
	e := &s.ev
	if e.open && !e.ended && e.err == nil {
		var buf [512]byte
		for e.err == nil && !e.ended {
			(*sseData)(s).Read(buf[:])
		}
	}
	if e.err != nil {
		return nil, e.err
	}
	*e = sseEvent{}
	for {
		data, err := s.lineStart()
		if err != nil {
			e.err = err
			return nil, err
		}
		if data {
			// A blank line before any data separates nothing.
			e.open, e.inData = true, true
			return (*sseData)(s), nil
		}
	}
}

// lineStart reads the start of the next line: a blank line (consumed), or
// a data line (data: its "data:" and one space consumed). Other lines
// (comments, event:, id:, retry:) are skipped whole; io.EOF at the end of
// the body. It never waits for bytes past the end of the line: the blank
// line that ends an event may be the last the upstream sends for a while.
func (s *sseReader) lineStart() (data bool, err error) {
	for {
		b, err := s.br.Peek(1)
		if len(b) == 0 {
			if err == nil {
				err = io.EOF
			}
			return false, err
		}
		switch b[0] {
		case '\n':
			s.br.Discard(1)
			return false, nil
		case '\r':
			// "\r" at the end of the body is a line ending too, as
			// readLine trims it.
			if b, _ = s.br.Peek(2); len(b) == 1 || b[1] == '\n' {
				s.br.Discard(len(b))
				return false, nil
			}
		case 'd':
			if n := s.dataPrefix(); n > 0 {
				s.br.Discard(n)
				return true, nil
			}
		}
		if err := s.skipLine(); err != nil {
			return false, err
		}
	}
}

// dataPrefix is the length of the "data:" (and the one space after it)
// that starts the line, 0 when it does not: peeked a byte at a time, so as
// not to wait past the end of a short line.
func (s *sseReader) dataPrefix() int {
	const prefix = "data:"
	for k := 2; k <= len(prefix); k++ {
		b, _ := s.br.Peek(k)
		if len(b) < k || b[k-1] != prefix[k-1] {
			return 0
		}
	}
	// Another byte always follows on the line: its ending, if nothing else.
	if b, _ := s.br.Peek(len(prefix) + 1); len(b) > len(prefix) && b[len(prefix)] == ' ' {
		return len(prefix) + 1
	}
	return len(prefix)
}

// skipLine discards the rest of a line that is not data. A line over the
// cap fails as Next's does.
func (s *sseReader) skipLine() error {
	n := 0
	for {
		b, err := s.br.ReadSlice('\n')
		if n += len(b); n > s.max {
			return ErrEventTooLarge
		}
		switch {
		case err == nil:
			return nil
		case err == bufio.ErrBufferFull:
		case err == io.EOF && n > 0:
			return nil
		default:
			return err
		}
	}
}

// sseData is the reader NextReader hands out: an sseReader reading its
// current event's data.
type sseData sseReader

// Read implements io.Reader. It returns what it has rather than wait for
// more, and never 0, nil.
func (d *sseData) Read(p []byte) (int, error) {
	s := (*sseReader)(d)
	e := &s.ev
	n := 0
	for n < len(p) && e.err == nil && !e.ended && (n == 0 || s.br.Buffered() > 0) {
		switch {
		case !e.inData:
			data, err := s.lineStart()
			switch {
			case err == io.EOF, err == nil && !data:
				e.ended = true
			case err != nil:
				e.err = err
			default:
				e.inData = true
			}
		case e.joined:
			// The data of two lines is joined by a line feed.
			if d.count(1) {
				p[n] = '\n'
				n++
				e.joined = false
			}
		default:
			k, err := d.value(p[n:])
			n += k
			if err != nil {
				e.err = err
			}
		}
	}
	if n > 0 {
		return n, nil
	}
	if e.err != nil {
		return 0, e.err
	}
	return 0, io.EOF
}

// count adds k bytes to the event's data, failing past the cap.
func (d *sseData) count(k int) bool {
	e := &d.ev
	if e.n+k > d.max {
		e.err = ErrEventTooLarge
		return false
	}
	e.n += k
	return true
}

// value copies what br holds of the current data line's value into p, up
// to the line's end, which it consumes: the next data line is then joined.
func (d *sseData) value(p []byte) (int, error) {
	s := (*sseReader)(d)
	e := &s.ev
	b, err := s.br.Peek(1)
	if len(b) == 0 {
		if err == io.EOF {
			// The body ended the line, and the event with it.
			e.inData, e.ended = false, true
			return 0, nil
		}
		return 0, err
	}
	b, _ = s.br.Peek(s.br.Buffered())
	i := bytes.IndexByte(b, '\n')
	end := i >= 0
	if end {
		b = b[:i]
	}
	if len(b) > 0 && b[len(b)-1] == '\r' {
		switch {
		case end:
			b = b[:len(b)-1]
		case len(b) > 1:
			// Whether this \r ends the line shows with the byte after it.
			b = b[:len(b)-1]
		default:
			// A lone \r ends the line if the body ends after it (as
			// readLine trims it) or a \n follows.
			nx, _ := s.br.Peek(2)
			if len(nx) < 2 || nx[1] == '\n' {
				s.br.Discard(len(nx))
				e.inData, e.joined = false, true
				return 0, nil
			}
			b = nx[:1] // the peek may have moved the buffer's bytes
		}
	}
	k := min(len(b), len(p))
	if !d.count(k) {
		return 0, e.err
	}
	copy(p, b[:k])
	if k == len(b) && end {
		s.br.Discard(i + 1)
		e.inData, e.joined = false, true
		return k, nil
	}
	s.br.Discard(k)
	return k, nil
}

// readLine returns the next line without its line ending.
func (s *sseReader) readLine() ([]byte, error) {
	line, err := s.br.ReadSlice('\n')
	s.long = false
	if err == bufio.ErrBufferFull {
		s.long = true
		s.line = append(s.line[:0], line...)
		for err == bufio.ErrBufferFull {
			if len(s.line) > s.max {
				return nil, ErrEventTooLarge
			}
			line, err = s.br.ReadSlice('\n')
			s.line = append(s.line, line...)
		}
		line = s.line
	}
	if err != nil && err != io.EOF {
		return nil, err
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return line, err
}

// ssePool recycles SSE readers with their line buffers: an image event is
// one line of megabytes, and growing a fresh buffer to that size for every
// stream cost about five times the line in allocations.
var ssePool sync.Pool

func getSSEReader(body io.Reader, max int) *sseReader {
	r, ok := ssePool.Get().(*sseReader)
	if !ok {
		return newSSEReader(body, max)
	}
	r.br.Reset(body)
	r.data, r.line, r.long, r.max = r.data[:0], r.line[:0], false, max
	r.ev = sseEvent{}
	return r
}

func putSSEReader(r *sseReader) {
	if cap(r.data)+cap(r.line) > 32<<20 {
		return // a rare giant event: let it go rather than pin it
	}
	r.br.Reset(nil)
	ssePool.Put(r)
}
