package router

import (
	"context"
	"errors"
	"testing"

	"nanogate/config"
	"nanogate/provider"
)

// preparing is a provider whose requests are prepared first, as the gemini
// kind fetches image URLs.
type preparing struct {
	fakeProvider
	prepares    int
	hadDeadline bool
	prepErr     error
}

func (p *preparing) Prepare(ctx context.Context, _ *provider.ChatRequest, _ string) error {
	p.prepares++
	_, p.hadDeadline = ctx.Deadline()
	return p.prepErr
}

// TestPrepareIsTheClientsNotTheProviders: preparing a request runs outside
// the attempt's timeout, and its failure is the request's answer without an
// attempt, a failover or a mark on the provider's health.
func TestPrepareIsTheClientsNotTheProviders(t *testing.T) {
	a := &preparing{fakeProvider: fakeProvider{name: "a"}}
	b := &fakeProvider{name: "b"}
	r := setup(t, config.Routing{Health: config.Health{FailureThreshold: 1}}, &a.fakeProvider, b)
	r.byModel["m"][0].Provider = a
	if _, s, err := r.Chat(context.Background(), req); err != nil || s.Provider != "a" || a.prepares != 1 {
		t.Fatalf("served %+v err %v prepares %d", s, err, a.prepares)
	}
	if a.hadDeadline {
		t.Fatal("Prepare ran under the attempt's timeout")
	}

	slow := &provider.Error{Kind: provider.KindClient, Status: 400, Message: "fetching the image URL timed out"}
	for _, perr := range []error{slow, provider.ErrFetchBusy} {
		a.prepErr = perr
		_, s, err := r.Chat(context.Background(), req)
		if !errors.Is(err, perr) || s.Attempts != 0 || b.calls.Load() != 0 {
			t.Fatalf("prepare failing with %v: served %+v err %v, b called %d times", perr, s, err, b.calls.Load())
		}
	}
	if st := r.Statuses()[0]; st.State != "healthy" || st.Failures != 0 || st.Requests != 1 {
		t.Fatalf("failed preparations counted against the provider: %+v", st)
	}
}

// TestPrepareSkipsUnusableCandidates: a provider whose circuit is open is
// not prepared for (its fetch would be for nothing).
func TestPrepareSkipsUnusableCandidates(t *testing.T) {
	a := &preparing{fakeProvider: fakeProvider{name: "a", fn: fail("a", provider.KindServer)}}
	b := &fakeProvider{name: "b"}
	r := setup(t, config.Routing{Health: config.Health{FailureThreshold: 1}}, &a.fakeProvider, b)
	r.byModel["m"][0].Provider = a
	r.Chat(context.Background(), req) // opens a's circuit
	a.prepares = 0
	if _, s, err := r.Chat(context.Background(), req); err != nil || s.Provider != "b" || a.prepares != 0 {
		t.Fatalf("served %+v err %v; a prepared %d times", s, err, a.prepares)
	}
}
