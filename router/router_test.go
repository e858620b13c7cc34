package router

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"nanogate/config"
	"nanogate/metrics"
	"nanogate/provider"
)

// fakeProvider answers from a function; calls are counted.
type fakeProvider struct {
	name  string
	calls atomic.Int64
	fn    func(ctx context.Context) error
}

func (f *fakeProvider) Name() string              { return f.name }
func (f *fakeProvider) Kind() config.ProviderKind { return config.KindOpenAI }
func (f *fakeProvider) Close()                    {}
func (f *fakeProvider) Chat(ctx context.Context, _ *provider.ChatRequest, _ string) (*provider.Result, error) {
	f.calls.Add(1)
	if f.fn != nil {
		if err := f.fn(ctx); err != nil {
			return nil, err
		}
	}
	return &provider.Result{Choices: []provider.Choice{{FinishReason: "stop"}}}, nil
}
func (f *fakeProvider) ChatStream(ctx context.Context, r *provider.ChatRequest, m string) (provider.Stream, error) {
	return nil, errors.New("not used")
}

func fail(name string, kind provider.ErrorKind) func(context.Context) error {
	return func(context.Context) error { return &provider.Error{Provider: name, Kind: kind, Message: "boom"} }
}

// advance moves the fake clock of the synctest bubble the test runs in:
// sleeping returns at once, nothing else in the bubble running.
func advance(d time.Duration) { time.Sleep(d) }

func setup(t *testing.T, rc config.Routing, provs ...*fakeProvider) *Router {
	t.Helper()
	var entries []Entry
	for i, p := range provs {
		entries = append(entries, Entry{Provider: p, Config: config.Provider{
			Name: p.name, Models: map[string]string{"m": "up"}, Timeout: time.Second,
			Price: config.Price{PerImage: 0.035 + 0.004*float64(i)},
		}})
	}
	if rc.MaxAttempts == 0 {
		rc.MaxAttempts = 3
	}
	if rc.Health.FailureThreshold == 0 {
		rc.Health.FailureThreshold = 3
	}
	if rc.Health.Cooldown == 0 {
		rc.Health.Cooldown = 30 * time.Second
	}
	return New(entries, rc, nil, nil, metrics.New())
}

var req = &provider.ChatRequest{Model: "m"}

func TestCheapestFirstThenFailover(t *testing.T) {
	cheap := &fakeProvider{name: "cheap"}
	dear := &fakeProvider{name: "dear"}
	r := setup(t, config.Routing{}, dear, cheap) // config order must not matter
	// Reverse the prices so that "cheap" is cheap although listed second.
	r.byModel["m"][0].Price.PerImage, r.byModel["m"][1].Price.PerImage = 0.039, 0.035
	_, s, err := r.Chat(context.Background(), req)
	if err != nil || s.Provider != "cheap" || s.Attempts != 1 {
		t.Fatalf("served %+v err %v", s, err)
	}
	cheap.fn = fail("cheap", provider.KindServer)
	_, s, err = r.Chat(context.Background(), req)
	if err != nil || s.Provider != "dear" || s.Attempts != 2 || len(s.Tried) != 2 {
		t.Fatalf("failover: served %+v err %v", s, err)
	}
}

// TestCheapestByTheModelsPriceAtTheSize: a provider is ranked by what it
// bills for the model and the image size asked for, not by its price for
// other models.
func TestCheapestByTheModelsPriceAtTheSize(t *testing.T) {
	google := &fakeProvider{name: "google"}
	reseller := &fakeProvider{name: "reseller"}
	models := map[string]string{"pro": "up-pro", "flash": "up-flash"}
	r := New([]Entry{
		{Provider: google, Config: config.Provider{Name: "google", Models: models, Timeout: time.Second,
			Price: config.Price{PerImage: 0.039}},
			Prices: map[string]config.Price{"pro": {PerImage: 0.134, PerImageBySize: map[string]float64{"1K": 0.134, "4K": 0.24}}}},
		{Provider: reseller, Config: config.Provider{Name: "reseller", Models: models, Timeout: time.Second,
			Price: config.Price{PerImage: 0.045}},
			Prices: map[string]config.Price{"pro": {PerImage: 0.05, PerImageBySize: map[string]float64{"4K": 0.30}}}},
	}, config.Routing{MaxAttempts: 1}, nil, nil, metrics.New())
	for _, c := range []struct{ model, size, want string }{
		{"pro", "", "reseller"},   // 0.05 against 0.134
		{"pro", "1K", "reseller"}, // the reseller has no 1K price of its own: 0.05
		{"pro", "4K", "google"},   // 0.24 against 0.30
		{"flash", "", "google"},   // no model price: 0.039 against 0.045
		{"flash", "4K", "google"}, // nor one for the size
	} {
		_, s, err := r.Chat(context.Background(), &provider.ChatRequest{Model: c.model, ImageSize: c.size})
		if err != nil || s.Provider != c.want {
			t.Errorf("%s at %q: served by %q (%v), want %s", c.model, c.size, s.Provider, err, c.want)
		}
	}
}

func TestClientErrorIsNotRetriedNorCounted(t *testing.T) {
	a := &fakeProvider{name: "a", fn: fail("a", provider.KindClient)}
	b := &fakeProvider{name: "b"}
	r := setup(t, config.Routing{Health: config.Health{FailureThreshold: 1}}, a, b)
	for i := 0; i < 3; i++ {
		if _, _, err := r.Chat(context.Background(), req); err == nil {
			t.Fatal("client error swallowed")
		}
	}
	if b.calls.Load() != 0 {
		t.Fatalf("a client error was retried")
	}
	if st := r.Statuses()[0]; st.State != "healthy" || st.Failures != 0 {
		t.Fatalf("client errors counted against the provider: %+v", st)
	}
}

func TestCircuitOpensSkipsAndClosesAfterTrial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := &fakeProvider{name: "a", fn: fail("a", provider.KindServer)}
		b := &fakeProvider{name: "b"}
		r := setup(t, config.Routing{Health: config.Health{FailureThreshold: 2, Cooldown: 10 * time.Second}}, a, b)
		for i := 0; i < 2; i++ {
			r.Chat(context.Background(), req)
		}
		if st := r.Statuses()[0]; st.State != "open" || st.TrialInSeconds <= 0 {
			t.Fatalf("after 2 failures: %+v", st)
		}
		before := a.calls.Load()
		for i := 0; i < 5; i++ {
			if _, s, err := r.Chat(context.Background(), req); err != nil || s.Provider != "b" || s.Attempts != 1 {
				t.Fatalf("open circuit not skipped: %+v %v", s, err)
			}
		}
		if a.calls.Load() != before {
			t.Fatalf("an open provider got traffic")
		}
		// Cooldown over: one trial; it fails and the circuit reopens.
		advance(11 * time.Second)
		r.Chat(context.Background(), req)
		if a.calls.Load() != before+1 || r.Statuses()[0].State != "open" {
			t.Fatalf("failed trial: calls %d state %s", a.calls.Load(), r.Statuses()[0].State)
		}
		// Next cooldown: the trial succeeds and the circuit closes.
		a.fn = nil
		advance(11 * time.Second)
		if _, s, _ := r.Chat(context.Background(), req); s.Provider != "a" {
			t.Fatalf("trial not sent to a: %+v", s)
		}
		if st := r.Statuses()[0]; st.State != "healthy" || st.ConsecutiveFailures != 0 {
			t.Fatalf("after a good trial: %+v", st)
		}
	})
}

func TestHalfOpenAdmitsExactlyOneTrial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		a := &fakeProvider{name: "a", fn: fail("a", provider.KindServer)}
		b := &fakeProvider{name: "b"}
		r := setup(t, config.Routing{Health: config.Health{FailureThreshold: 1, Cooldown: time.Second}}, a, b)
		r.Chat(context.Background(), req)
		advance(2 * time.Second)
		a.fn = func(context.Context) error { <-release; return nil }
		var wg sync.WaitGroup
		for i := 0; i < 100; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.Chat(context.Background(), req)
			}()
		}
		// Every other request passes b while the trial is held (b took the
		// failover of the first request too).
		synctest.Wait()
		if n := b.calls.Load(); n != 1+99 {
			t.Errorf("b got %d calls while the trial was held, want 100", n)
		}
		close(release)
		wg.Wait()
		if n := a.calls.Load(); n != 2 { // the failure that opened it, then one trial
			t.Fatalf("half-open provider got %d calls, want 1 trial", n-1)
		}
		if r.Statuses()[0].State != "healthy" {
			t.Fatal("successful trial did not close the circuit")
		}
	})
}

func TestAllOpenIsNoProvider(t *testing.T) {
	a := &fakeProvider{name: "a", fn: fail("a", provider.KindServer)}
	r := setup(t, config.Routing{Health: config.Health{FailureThreshold: 1}}, a)
	r.Chat(context.Background(), req)
	if _, _, err := r.Chat(context.Background(), req); !errors.Is(err, ErrNoProvider) {
		t.Fatalf("err = %v, want ErrNoProvider", err)
	}
	if r.Usable() {
		t.Fatal("Usable with every circuit open")
	}
}

func TestRetryAfterBenchesProvider(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := &fakeProvider{name: "a", fn: func(context.Context) error {
			return &provider.Error{Provider: "a", Kind: provider.KindRateLimited, RetryAfter: 13 * time.Second, Message: "quota"}
		}}
		b := &fakeProvider{name: "b"}
		r := setup(t, config.Routing{}, a, b)
		r.Chat(context.Background(), req)
		a.fn = nil
		if _, s, _ := r.Chat(context.Background(), req); s.Provider != "b" || a.calls.Load() != 1 {
			t.Fatalf("benched provider used: %+v", s)
		}
		advance(14 * time.Second)
		if _, s, _ := r.Chat(context.Background(), req); s.Provider != "a" {
			t.Fatalf("provider not back after its retry delay: %+v", s)
		}
	})
}

// TestRetryAfterBenchIsCapped: an upstream asking for 31 years of rest
// (retry-after: 999999999) is benched for routing.health.max_retry_after.
func TestRetryAfterBenchIsCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := &fakeProvider{name: "a", fn: func(context.Context) error {
			return &provider.Error{Provider: "a", Kind: provider.KindRateLimited, RetryAfter: 999999999 * time.Second, Message: "quota"}
		}}
		b := &fakeProvider{name: "b"}
		r := setup(t, config.Routing{Health: config.Health{MaxRetryAfter: 45 * time.Second}}, a, b)
		r.Chat(context.Background(), req)
		a.fn = nil
		if st := r.Statuses()[0]; st.BenchedForSeconds != 45 {
			t.Fatalf("benched for %vs, want 45s", st.BenchedForSeconds)
		}
		advance(44 * time.Second)
		if _, s, _ := r.Chat(context.Background(), req); s.Provider != "b" {
			t.Fatalf("bench ended early: %+v", s)
		}
		advance(time.Second)
		if _, s, _ := r.Chat(context.Background(), req); s.Provider != "a" {
			t.Fatalf("provider still benched after max_retry_after: %+v", s)
		}

		// Without the setting, the default applies; a reload with a shorter cap
		// shortens a bench already running.
		r = setup(t, config.Routing{}, a, b)
		a.fn = func(context.Context) error {
			return &provider.Error{Provider: "a", Kind: provider.KindRateLimited, RetryAfter: provider.MaxRetryAfter, Message: "quota"}
		}
		r.Chat(context.Background(), req)
		if st := r.Statuses()[0]; st.BenchedForSeconds != config.DefaultMaxRetryAfter.Seconds() {
			t.Fatalf("benched for %vs, want the default %v", st.BenchedForSeconds, config.DefaultMaxRetryAfter)
		}
		r2 := New([]Entry{{Provider: a, Config: config.Provider{Name: "a", Models: map[string]string{"m": "up"}, Timeout: time.Second}}},
			config.Routing{MaxAttempts: 1, Health: config.Health{FailureThreshold: 3, MaxRetryAfter: 5 * time.Second}}, r, nil, nil)
		if st := r2.Statuses()[0]; st.BenchedForSeconds > 5 {
			t.Fatalf("after a reload with a 5s cap: benched for %vs", st.BenchedForSeconds)
		}
	})
}

func TestLatencyStrategyPrefersFaster(t *testing.T) {
	slow := &fakeProvider{name: "slow"}
	fast := &fakeProvider{name: "fast"}
	r := setup(t, config.Routing{Strategy: "latency"}, slow, fast)
	r.byName["slow"].health.ewmaMS = 900
	r.byName["fast"].health.ewmaMS = 100
	if _, s, _ := r.Chat(context.Background(), req); s.Provider != "fast" {
		t.Fatalf("latency strategy chose %s", s.Provider)
	}
	// Cheapest ignores latency unless prices tie.
	r.strategy = cheapest{}
	if _, s, _ := r.Chat(context.Background(), req); s.Provider != "slow" {
		t.Fatalf("cheapest chose %s", s.Provider)
	}
}

func TestReloadKeepsHealth(t *testing.T) {
	a := &fakeProvider{name: "a", fn: fail("a", provider.KindServer)}
	r := setup(t, config.Routing{Health: config.Health{FailureThreshold: 1}}, a)
	r.Chat(context.Background(), req)
	r2 := New([]Entry{{Provider: a, Config: config.Provider{Name: "a", Models: map[string]string{"m": "up"}, Timeout: time.Second}}},
		config.Routing{MaxAttempts: 1, Health: config.Health{FailureThreshold: 1, Cooldown: time.Hour}}, r, nil, nil)
	if st := r2.Statuses()[0]; st.State != "open" {
		t.Fatalf("reload forgot the open circuit: %+v", st)
	}
}

func TestMaxAttempts(t *testing.T) {
	ps := []*fakeProvider{{name: "a"}, {name: "b"}, {name: "c"}}
	for _, p := range ps {
		p.fn = fail(p.name, provider.KindTransport)
	}
	r := setup(t, config.Routing{MaxAttempts: 2}, ps...)
	_, s, err := r.Chat(context.Background(), req)
	if err == nil || s.Attempts != 2 || ps[2].calls.Load() != 0 {
		t.Fatalf("served %+v err %v", s, err)
	}
}
