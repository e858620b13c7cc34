package provider

import "nanogate/upstream"

// bufferedResult parses a whole upstream answer with parse; the result keeps
// the response (its images point into the body) until it is released.
func bufferedResult(resp *upstream.Response, parse func([]byte) (*Result, error)) (*Result, error) {
	res, err := parse(resp.Body())
	if err != nil {
		resp.Release()
		return nil, err
	}
	res.release = resp.Release
	return res, nil
}

// smallAnswerBytes is the Content-Length up to which an answer asked to be
// forwarded is read whole and parsed as a buffered one: on an answer that
// fits a window, walking it costs more than it saves (a reseller's answer
// with a small image: 13 KB more allocated and 10 % more CPU per request).
const smallAnswerBytes = 64 << 10

// readSmall reads resp whole and hands it out as the events of a forwarded
// answer when its Content-Length says it is small (ok false, nothing read,
// otherwise). digest: images get their digests, as the forward gives them.
func readSmall(name string, resp *upstream.Response, parse func([]byte) (*Result, error), digest bool) (st Stream, ok bool, err error) {
	if cl := resp.Header.ContentLength(); cl < 0 || cl > smallAnswerBytes {
		return nil, false, nil
	}
	if err := resp.ReadWhole(); err != nil {
		resp.Release()
		if err == upstream.ErrBodyTooLarge {
			return nil, true, &Error{Provider: name, Kind: KindInvalidResponse, Message: "upstream answer too large", Err: err}
		}
		return nil, true, transportError(name, err)
	}
	res, err := bufferedResult(resp, parse)
	if err != nil {
		return nil, true, err
	}
	return newResultStream(res, digest), true, nil
}

// eventStream is what both kinds' streams share: the open answer, its SSE
// reader, and the events decoded from one upstream event but not handed out
// yet (one upstream event can make several).
type eventStream struct {
	resp  *upstream.Response // nil when reading a plain io.Reader (tests)
	sse   *sseReader
	queue []Event
	qi    int
}

// pop returns the next queued event, or nil when the queue is empty, in
// which case it is reset for the next upstream event.
func (s *eventStream) pop() *Event {
	if s.qi < len(s.queue) {
		ev := &s.queue[s.qi]
		s.qi++
		return ev
	}
	s.queue, s.qi = s.queue[:0], 0
	return nil
}

// Close implements Stream. The spans of the last event are invalid after it.
func (s *eventStream) Close() {
	if s.sse != nil {
		putSSEReader(s.sse)
		s.sse = nil
	}
	if s.resp != nil {
		s.resp.Release()
		s.resp = nil
	}
}
