package gateway

import (
	"context"
	"io"
	"sync"

	"nanogate/internal/safemath"
	"nanogate/provider"
	"nanogate/router"
)

// fanIn relays several upstream streams of one answer each as one stream of
// n choices: choice i is stream i's. Events keep their order within a
// stream and interleave across streams as they arrive; usage is summed and
// sent once, at the end. A stream that fails mid-way fails the whole (as a
// single stream's failure does).
//
// An event's spans are valid until the stream that made it is read again:
// each stream's reader waits for Next to be called again after handing an
// event over, so the relay never holds two events of one stream.
type fanIn struct {
	cancel context.CancelFunc
	events chan fanEvent
	acks   []chan struct{}
	subs   []provider.Stream
	wg     sync.WaitGroup

	pending int // stream whose reader waits for an ack, -1 for none
	live    int
	usage   provider.Usage
	sawUse  bool
	done    bool
}

type fanEvent struct {
	sub int
	ev  *provider.Event
	err error
}

// newFanIn starts relaying subs, whose first events are firsts; cancel ends
// the context they read under.
func newFanIn(subs []provider.Stream, firsts []*provider.Event, cancel context.CancelFunc) *fanIn {
	f := &fanIn{cancel: cancel, events: make(chan fanEvent), subs: subs, pending: -1, live: len(subs)}
	f.acks = make([]chan struct{}, len(subs))
	for i := range subs {
		f.acks[i] = make(chan struct{})
		f.wg.Add(1)
		go f.read(i, firsts[i])
	}
	return f
}

// read hands stream i's events to Next, one at a time.
func (f *fanIn) read(i int, ev *provider.Event) {
	defer f.wg.Done()
	for {
		f.events <- fanEvent{sub: i, ev: ev}
		if _, ok := <-f.acks[i]; !ok {
			return // closed
		}
		var err error
		ev, err = f.subs[i].Next()
		if err != nil {
			f.events <- fanEvent{sub: i, err: err}
			return
		}
	}
}

// Next implements provider.Stream.
func (f *fanIn) Next() (*provider.Event, error) {
	if f.pending >= 0 {
		f.acks[f.pending] <- struct{}{}
		f.pending = -1
	}
	for {
		if f.live == 0 {
			if f.sawUse && !f.done {
				f.done = true
				u := f.usage
				return &provider.Event{Usage: &u}, nil
			}
			return nil, io.EOF
		}
		fe := <-f.events
		switch {
		case fe.err == io.EOF:
			f.live--
			continue
		case fe.err != nil:
			f.live--
			return nil, fe.err
		}
		f.pending = fe.sub
		if u := fe.ev.Usage; u != nil {
			f.sawUse = true
			f.usage.Reported = f.usage.Reported || u.Reported
			f.usage.PromptTokens = safemath.Add(f.usage.PromptTokens, u.PromptTokens)
			f.usage.TextTokens = safemath.Add(f.usage.TextTokens, u.TextTokens)
			f.usage.PromptImageTokens = safemath.Add(f.usage.PromptImageTokens, u.PromptImageTokens)
			f.usage.ImageTokens = safemath.Add(f.usage.ImageTokens, u.ImageTokens)
			f.usage.ImageTokensListed = f.usage.ImageTokensListed || u.ImageTokensListed
			f.acks[f.pending] <- struct{}{}
			f.pending = -1
			continue
		}
		fe.ev.Choice = fe.sub
		return fe.ev, nil
	}
}

// Close implements provider.Stream: it ends the upstream reads, waits for
// the readers and closes the streams.
func (f *fanIn) Close() {
	f.cancel()
	for i := range f.acks {
		close(f.acks[i])
	}
	// Readers blocked handing an event over are drained.
	go func() {
		for range f.events {
		}
	}()
	f.wg.Wait()
	close(f.events)
	for _, s := range f.subs {
		s.Close()
	}
}

// chatStreamFanOut opens n streams of one answer each at once and relays
// them as one (fanIn). It fails only when none opened; the answer is billed
// at the provider of the first that did.
func (g *Gateway) chatStreamFanOut(ctx context.Context, call *Call) (*StreamAnswer, router.Served, error) {
	n := call.Req.N
	fctx, cancel := context.WithCancel(ctx)
	type opened struct {
		st     provider.Stream
		first  *provider.Event
		served router.Served
		err    error
	}
	outs := make([]opened, n)
	inParallel(n, func(i int) {
		o := &outs[i]
		o.st, o.first, o.served, o.err = g.router.ChatStream(fctx, call.Req.Single())
	})
	var subs []provider.Stream
	var firsts []*provider.Event
	var served router.Served
	var lastErr error
	for _, o := range outs {
		if o.err != nil {
			lastErr = o.err
			continue
		}
		if len(subs) == 0 {
			served = o.served
		}
		subs, firsts = append(subs, o.st), append(firsts, o.first)
	}
	if len(subs) == 0 {
		cancel()
		call.fail(outs[n-1].served, lastErr)
		return nil, outs[n-1].served, lastErr
	}
	f := newFanIn(subs, firsts, cancel)
	first, err := f.Next()
	if err != nil {
		f.Close()
		call.fail(served, err)
		return nil, served, err
	}
	return g.newStreamAnswer(ctx, call, f, first, served), served, nil
}
