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
		if err != nil {
			if err == io.EOF && have {
				// The body ended without a blank line after the last event:
				// Google's streams do that; the event is still whole.
				return s.data, nil
			}
			if err == io.EOF && len(line) == 0 {
				return nil, io.EOF
			}
			if err != io.EOF {
				return nil, err
			}
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
				return s.data, nil
			}
			return nil, io.EOF
		}
	}
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
	return r
}

func putSSEReader(r *sseReader) {
	if cap(r.data)+cap(r.line) > 32<<20 {
		return // a rare giant event: let it go rather than pin it
	}
	r.br.Reset(nil)
	ssePool.Put(r)
}
