package gateway

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"nanogate/accounting"
	"nanogate/auth"
	"nanogate/config"
	"nanogate/provider"
	"nanogate/ratelimit"
	"nanogate/router"
)

// scripted is a provider whose answers the test sets: each call takes the
// next outcome (the last repeats).
type scripted struct {
	name string
	mu   sync.Mutex
	outs []error // nil: an answer with one image
	n    int
}

func (p *scripted) Name() string              { return p.name }
func (p *scripted) Kind() config.ProviderKind { return config.KindOpenAI }
func (p *scripted) Close()                    {}
func (p *scripted) next() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := min(p.n, len(p.outs)-1)
	p.n++
	if i < 0 {
		return nil
	}
	return p.outs[i]
}

func (p *scripted) Chat(ctx context.Context, req *provider.ChatRequest, model string) (*provider.Result, error) {
	if err := p.next(); err != nil {
		return nil, err
	}
	return &provider.Result{Choices: []provider.Choice{{Text: []byte("ok"), FinishReason: "stop",
		Images: []provider.Image{{MIME: "image/png", B64: []byte(tinyPNG)}}}},
		Usage: provider.Usage{Reported: true, PromptTokens: 10, TextTokens: 2}}, nil
}

func (p *scripted) ChatStream(ctx context.Context, req *provider.ChatRequest, model string) (provider.Stream, error) {
	if err := p.next(); err != nil {
		return nil, err
	}
	return &replay{evs: []provider.Event{
		{Text: []byte("ok")},
		{Image: &provider.Image{MIME: "image/png", B64: []byte(tinyPNG)}},
		{FinishReason: "stop"},
		{Usage: &provider.Usage{Reported: true, PromptTokens: 10, TextTokens: 2}},
	}}, nil
}

const tinyPNG = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFElEQVR42mP4z8DAAMIM////ZwAAHu8E/HMcU8wAAAAASUVORK5CYII="

// replay is a provider stream of fixed events.
type replay struct {
	evs    []provider.Event
	i      int
	closed bool
}

func (r *replay) Next() (*provider.Event, error) {
	if r.i >= len(r.evs) {
		return nil, io.EOF
	}
	r.i++
	return &r.evs[r.i-1], nil
}

func (r *replay) Close() { r.closed = true }

// ledger is an accounting store that keeps what it was given.
type ledger struct {
	mu       sync.Mutex
	recs     []accounting.Record
	reserved map[string]int64
	released []string
	budget   int64 // micros a team may reserve; 0: any
}

func (l *ledger) Apply(_ context.Context, rec accounting.Record) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, rec)
	delete(l.reserved, rec.ID)
	return true, nil
}

func (l *ledger) ApplyBatch(ctx context.Context, recs []accounting.Record) (int, error) {
	for _, r := range recs {
		l.Apply(ctx, r)
	}
	return len(recs), nil
}

func (l *ledger) Reserve(_ context.Context, a accounting.Ask) (accounting.Reservation, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.budget > 0 && a.Micros > l.budget {
		return accounting.Reservation{}, accounting.ErrBudgetExceeded
	}
	if l.reserved == nil {
		l.reserved = map[string]int64{}
	}
	l.reserved[a.ID] = a.Micros
	return accounting.Reservation{Team: a.Team, ID: a.ID}, nil
}

func (l *ledger) Release(_ context.Context, r accounting.Reservation) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.released = append(l.released, r.ID)
	delete(l.reserved, r.ID)
	return nil
}

func (l *ledger) Reserved(context.Context, string, string) (int64, error) { return 0, nil }
func (l *ledger) Read(context.Context, string, []string) ([]*accounting.Bucket, error) {
	return nil, nil
}
func (l *ledger) Teams(context.Context) ([]string, error) { return nil, nil }
func (l *ledger) Close() error                            { return nil }

// tally is a limiter that admits everything and keeps the corrections.
type tally struct {
	mu      sync.Mutex
	refuse  bool
	charged int64
	adjusts []int64
}

func (t *tally) Allow(_ context.Context, r ratelimit.Request) (ratelimit.Result, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.refuse {
		return ratelimit.Result{Allowed: false, RetryAfter: time.Second}, nil
	}
	t.charged += r.Tokens
	return ratelimit.Result{Allowed: true}, nil
}

func (t *tally) Adjust(_ context.Context, r ratelimit.Request, delta int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.charged += delta
	t.adjusts = append(t.adjusts, delta)
	return nil
}

func (t *tally) Stats() ratelimit.Stats { return ratelimit.Stats{} }
func (t *tally) Close() error           { return nil }

// journey is a gateway over one scripted provider, with its books.
type journey struct {
	g      *Gateway
	p      *scripted
	books  *ledger
	limits *tally
	rec    *accounting.Recorder
}

func newJourney(t *testing.T, outs ...error) *journey {
	t.Helper()
	p := &scripted{name: "reseller", outs: outs}
	pc := config.Provider{Name: "reseller", Kind: config.KindOpenAI, Models: map[string]string{"m": "m"},
		Price: config.Price{PerImage: 0.035}}
	r := router.New([]router.Entry{{Provider: p, Config: pc}}, config.Routing{MaxAttempts: 1, Health: config.Health{FailureThreshold: 100}}, nil, nil, nil)
	j := &journey{p: p, books: &ledger{}, limits: &tally{}}
	j.rec = accounting.NewRecorder(j.books, accounting.RecorderOptions{SpoolPath: t.TempDir() + "/spool"})
	t.Cleanup(func() { j.rec.Close(context.Background()) })
	cfg := &config.Config{Providers: []config.Provider{pc}}
	team := &config.Team{Name: "design", Budget: &config.Budget{USD: 100, Period: "monthly"}}
	j.g = New(r, Options{TokensPerImage: 1290, Limiter: j.limits, Accounting: &Accounting{Store: j.books,
		Recorder: j.rec, Pricer: accounting.NewPricer(cfg), Teams: map[string]*config.Team{"design": team}}})
	return j
}

func (j *journey) call(t *testing.T, body string) *Call {
	t.Helper()
	req, err := ParseChatRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return &Call{ID: "req1", Caller: &auth.Caller{Name: "ci", Team: "design"}, Req: req}
}

// records waits for the recorder and returns what the store got, by id.
func (j *journey) records(t *testing.T) map[string]accounting.Record {
	t.Helper()
	if err := j.rec.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	j.books.mu.Lock()
	defer j.books.mu.Unlock()
	out := map[string]accounting.Record{}
	for _, r := range j.books.recs {
		if _, dup := out[r.ID]; dup {
			t.Errorf("record %s written twice", r.ID)
		}
		out[r.ID] = r
	}
	return out
}

// settled reports what the TPM buckets hold for the calls made: it must be
// what they used, whatever the estimate was.
func (j *journey) settled() int64 {
	j.limits.mu.Lock()
	defer j.limits.mu.Unlock()
	return j.limits.charged
}

const chatOne = `{"model":"m","messages":[{"role":"user","content":"draw a cat"}]}`

// TestCloseBillsASuccessOnce: an answered call is recorded once at the
// provider that served it, at its price, with the TPM estimate settled to
// what it used and its budget reservation settled by the record; closing
// again changes nothing.
func TestCloseBillsASuccessOnce(t *testing.T) {
	j := newJourney(t, nil)
	call := j.call(t, chatOne)
	ans, _, err := j.g.Chat(context.Background(), call)
	if err != nil {
		t.Fatal(err)
	}
	ans.Result.Release()
	b := call.Close()
	if again := call.Close(); again != b {
		t.Fatalf("second Close billed %+v, first %+v", again, b)
	}
	recs := j.records(t)
	r, ok := recs["req1"]
	if len(recs) != 1 || !ok {
		t.Fatalf("records %v", recs)
	}
	if r.Provider != "reseller" || r.Status != 200 || r.Images != 1 || r.ImageTokens != 1290 || r.PromptTokens != 10 ||
		r.CostMicros != 35000 || b.CostMicros != 35000 {
		t.Fatalf("record %+v, bill %+v", r, b)
	}
	if used := j.settled(); used != 10+2+1290 {
		t.Fatalf("TPM holds %d after settling, want the %d used", used, 10+2+1290)
	}
	if len(j.books.reserved) != 0 || len(j.books.released) != 0 {
		t.Fatalf("reservations %v, released %v: the record settles it", j.books.reserved, j.books.released)
	}
}

// TestCloseBillsAFailureAsNothing: a call every provider failed is recorded
// once, as failed with the status the client gets, costing nothing; its
// whole TPM estimate is given back.
func TestCloseBillsAFailureAsNothing(t *testing.T) {
	j := newJourney(t, &provider.Error{Provider: "reseller", Kind: provider.KindTimeout, Message: "slow"})
	call := j.call(t, chatOne)
	if _, _, err := j.g.Chat(context.Background(), call); err == nil {
		t.Fatal("no error")
	}
	call.Close()
	r := j.records(t)["req1"]
	if r.Status != 504 || r.Provider != "" || r.CostMicros != 0 || r.Images != 0 {
		t.Fatalf("record %+v", r)
	}
	if used := j.settled(); used != 0 {
		t.Fatalf("TPM holds %d for a failed call", used)
	}
}

// TestARefusedCallRecordsNothing: a call refused at admission (a model the
// key may not use, a limit, the budget) holds nothing and records nothing;
// closing it is harmless.
func TestARefusedCallRecordsNothing(t *testing.T) {
	for name, refuse := range map[string]func(*journey, *Call){
		"model":  func(j *journey, c *Call) { c.Caller.Models = map[string]bool{"other": true} },
		"limit":  func(j *journey, c *Call) { j.limits.refuse = true },
		"budget": func(j *journey, c *Call) { j.books.budget = 1 },
	} {
		t.Run(name, func(t *testing.T) {
			j := newJourney(t, nil)
			call := j.call(t, chatOne)
			refuse(j, call)
			if _, _, err := j.g.Chat(context.Background(), call); err == nil {
				t.Fatal("admitted")
			}
			call.Close()
			if recs := j.records(t); len(recs) != 0 {
				t.Fatalf("records %v", recs)
			}
			if used := j.settled(); used != 0 {
				t.Fatalf("TPM holds %d for a refused call", used)
			}
			if len(j.books.reserved) != 0 {
				t.Fatalf("reservation left: %v", j.books.reserved)
			}
		})
	}
}

// TestFanOutRecordsEachUpstreamCall: n=3 with one upstream call failing
// records the two answers under the request's id and a numbered one, each
// billed once, and the failure under its own number.
func TestFanOutRecordsEachUpstreamCall(t *testing.T) {
	j := newJourney(t, nil)
	j.p.outs = []error{nil, &provider.Error{Provider: "reseller", Kind: provider.KindServer, Status: 500, Message: "boom"}, nil}
	call := j.call(t, `{"model":"m","n":3,"messages":[{"role":"user","content":"draw"}]}`)
	ans, _, err := j.g.Chat(context.Background(), call)
	if err != nil {
		t.Fatal(err)
	}
	ans.Result.Release()
	if ans.Usage.Images != 2 {
		t.Fatalf("answer bills %d images", ans.Usage.Images)
	}
	b := call.Close()
	recs := j.records(t)
	var ids []string
	var images int64
	for id, r := range recs {
		ids = append(ids, id)
		images += r.Images
	}
	slices.Sort(ids)
	// The fan-out is concurrent: which call failed is not fixed, but two
	// answers are billed, once each, and the bill sums them.
	if len(recs) != 2 || images != 2 || ids[0] != "req1" || b.CostMicros != 70000 {
		t.Fatalf("records %v (bill %+v)", recs, b)
	}
	if used := j.settled(); used != 2*(10+2+1290) {
		t.Fatalf("TPM holds %d, want %d", used, 2*(10+2+1290))
	}
}

// TestImagesRecordEveryUpstreamCall: an Images API request for 2 images
// where one upstream call fails records both calls, the failure costing
// nothing.
func TestImagesRecordEveryUpstreamCall(t *testing.T) {
	j := newJourney(t, nil, &provider.Error{Provider: "reseller", Kind: provider.KindServer, Status: 500, Message: "boom"})
	call := j.call(t, chatOne)
	ans, err := j.g.Images(context.Background(), call, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	ans.Release()
	call.Close()
	recs := j.records(t)
	var ok, failed int
	for _, r := range recs {
		switch {
		case r.Status == 200 && r.Images == 1:
			ok++
		case r.Status >= 400 && r.CostMicros == 0 && r.Provider == "":
			failed++
		}
	}
	if len(recs) != 2 || ok != 1 || failed != 1 || recs["req1"].ID == "" || recs["req1-2"].ID == "" {
		t.Fatalf("records %v", recs)
	}
}

// TestAbandonedCallGivesBackWhatItHeld: a batch line abandoned mid-call
// (its replica stopping) records nothing under its id, which the line
// runs under again, and gives back its reservation and tokens.
func TestAbandonedCallGivesBackWhatItHeld(t *testing.T) {
	j := newJourney(t, &provider.Error{Provider: "reseller", Kind: provider.KindCanceled, Message: "stopping"})
	call := j.call(t, chatOne)
	if _, _, err := j.g.Chat(context.Background(), call); err == nil {
		t.Fatal("no error")
	}
	call.Abandon()
	call.Close()
	if recs := j.records(t); len(recs) != 0 {
		t.Fatalf("records %v", recs)
	}
	if !slices.Contains(j.books.released, "req1") || len(j.books.reserved) != 0 {
		t.Fatalf("reservation not given back: released %v, held %v", j.books.released, j.books.reserved)
	}
	if used := j.settled(); used != 0 {
		t.Fatalf("TPM holds %d", used)
	}
}

// TestAStreamBillsWhatPassed: a stream's images and reported usage are
// billed when it closes, once, as a stream record.
func TestAStreamBillsWhatPassed(t *testing.T) {
	j := newJourney(t, nil)
	call := j.call(t, `{"model":"m","stream":true,"messages":[{"role":"user","content":"draw"}]}`)
	sa, _, err := j.g.ChatStream(context.Background(), call)
	if err != nil {
		t.Fatal(err)
	}
	var images int
	for {
		ev, err := sa.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Image != nil {
			images++
		}
	}
	if u := sa.Usage(); images != 1 || u.Images != 1 || u.PromptTokens != 10 {
		t.Fatalf("%d images passed, usage %+v", images, u)
	}
	sa.Close()
	sa.Close()
	call.Close()
	r := j.records(t)["req1"]
	if !r.Stream || r.Status != 200 || r.Images != 1 || r.CostMicros != 35000 {
		t.Fatalf("record %+v", r)
	}
}

// TestFailedStatusIsTheClientsStatus: a failure's record carries the
// status the client is answered with.
func TestFailedStatusIsTheClientsStatus(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{&router.Overloaded{}, 429},
		{&router.Overloaded{AllOut: true}, 503},
		{&ContentPolicyError{Reason: "no"}, 400},
		{&provider.RequestError{Param: "n", Msg: "no"}, 400},
		{provider.ErrFetchBusy, 503},
		{router.ErrNoProvider, 503},
		{&provider.Error{Kind: provider.KindClient, Status: 422}, 422},
		{&provider.Error{Kind: provider.KindTimeout}, 504},
		{&provider.Error{Kind: provider.KindCanceled}, 499},
		{&provider.Error{Kind: provider.KindServer, Status: 500}, 502},
		{errors.New("surprise"), 502},
	} {
		if got := failedStatus(tt.err); got != tt.want {
			t.Errorf("%v: %d, want %d", tt.err, got, tt.want)
		}
	}
}

// TestLastTriedNamesEachCallsLastProviderOnce: a failed fanned-out answer
// names the provider each upstream call tried last, each once, in order.
func TestLastTriedNamesEachCallsLastProviderOnce(t *testing.T) {
	c := &Call{ID: "req_x"}
	if got := c.LastTried(); got != "" {
		t.Errorf("no provider tried: %q, want none", got)
	}
	c.served = router.Served{Tried: []string{"cheap", "google"}}
	for _, tried := range [][]string{{"google"}, nil, {"cheap", "laozhang"}, {"google"}} {
		c.sub(len(c.subs) + 2).served = router.Served{Tried: tried}
	}
	if got, want := c.LastTried(), "google,laozhang"; got != want {
		t.Errorf("LastTried = %q, want %q", got, want)
	}
}
