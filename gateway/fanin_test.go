package gateway

import (
	"context"
	"errors"
	"io"
	"testing"

	"nanogate/provider"
)

// listStream yields its events, then err (io.EOF when nil).
type listStream struct {
	evs    []*provider.Event
	err    error
	closed bool
}

func (s *listStream) Next() (*provider.Event, error) {
	if len(s.evs) == 0 {
		if s.err != nil {
			return nil, s.err
		}
		return nil, io.EOF
	}
	ev := s.evs[0]
	s.evs = s.evs[1:]
	return ev, nil
}

func (s *listStream) Close() { s.closed = true }

func text(t string) *provider.Event { return &provider.Event{Text: []byte(t)} }

func TestFanInRelaysEveryStreamAsItsChoiceWithUsageOnceAtTheEnd(t *testing.T) {
	a := &listStream{evs: []*provider.Event{text("a2"), {FinishReason: "stop"}, {Usage: &provider.Usage{PromptTokens: 3, TextTokens: 1}}}}
	b := &listStream{evs: []*provider.Event{{FinishReason: "stop"}, {Usage: &provider.Usage{PromptTokens: 4, TextTokens: 2}}}}
	_, cancel := context.WithCancel(context.Background())
	f := newFanIn([]provider.Stream{a, b}, []*provider.Event{text("a1"), text("b1")}, cancel)
	got := map[int]string{}
	finishes, usages := 0, 0
	var u provider.Usage
	for {
		ev, err := f.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case ev.Usage != nil:
			usages++
			u = *ev.Usage
		case ev.FinishReason != "":
			finishes++
		default:
			got[ev.Choice] += string(ev.Text)
		}
	}
	f.Close()
	if got[0] != "a1a2" || got[1] != "b1" || finishes != 2 || usages != 1 || u.PromptTokens != 7 || u.TextTokens != 3 {
		t.Fatalf("choices %v, %d finishes, %d usage events %+v", got, finishes, usages, u)
	}
	if !a.closed || !b.closed {
		t.Fatal("a stream was not closed")
	}
}

func TestFanInFailsWithAStreamAndClosesWhileOthersWait(t *testing.T) {
	boom := errors.New("cut")
	a := &listStream{err: boom}
	b := &listStream{evs: []*provider.Event{text("b2"), text("b3")}}
	_, cancel := context.WithCancel(context.Background())
	f := newFanIn([]provider.Stream{a, b}, []*provider.Event{text("a1"), text("b1")}, cancel)
	var err error
	for err == nil {
		_, err = f.Next()
	}
	if !errors.Is(err, boom) {
		t.Fatalf("err %v, want the cut stream's", err)
	}
	f.Close() // b's reader may be blocked handing over an event: Close must not hang
	if !a.closed || !b.closed {
		t.Fatal("a stream was not closed")
	}
}
