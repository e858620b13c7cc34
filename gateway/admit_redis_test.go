package gateway

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"nanogate/accounting"
	"nanogate/auth"
	"nanogate/config"
	"nanogate/internal/redistest"
	"nanogate/ratelimit"
	"nanogate/router"
)

// roundTrips counts the commands and pipelines a client sends.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// redisAdmission is a gateway whose limiter and budget store share one
// Redis, each on its own client as main.go builds them.
type redisAdmission struct {
	g              *Gateway
	lim            *ratelimit.Redis
	store          accounting.Store
	limRT, storeRT roundTrips
}

func newRedisAdmission(t *testing.T, budgetUSD float64) *redisAdmission {
	t.Helper()
	srv := redistest.Start(t)
	cfg := config.Redis{Addrs: []string{srv.Addr}, KeyPrefix: "t:", OnOutage: "closed",
		DialTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		DecisionTimeout: 5 * time.Second}
	a := &redisAdmission{lim: ratelimit.NewRedis(ratelimit.NewClient(cfg), cfg, nil)}
	t.Cleanup(func() { a.lim.Close() })
	a.lim.Client().AddHook(&a.limRT)
	ac := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: cfg.Addrs, ReadTimeout: 5 * time.Second})
	t.Cleanup(func() { ac.Close() })
	ac.AddHook(&a.storeRT)
	a.store = accounting.NewGuarded(accounting.NewRedis(ac, &cfg, accounting.Options{}),
		accounting.GuardOptions{Timeout: 5 * time.Second})
	p := &scripted{name: "reseller"}
	pc := config.Provider{Name: "reseller", Kind: config.KindOpenAI, Models: map[string]string{"m": "m"},
		Price: config.Price{PerImage: 0.035}}
	r := router.New([]router.Entry{{Provider: p, Config: pc}}, config.Routing{MaxAttempts: 1}, nil, nil, nil)
	team := &config.Team{Name: "design", Budget: &config.Budget{USD: budgetUSD, Period: "monthly"}}
	a.g = New(r, Options{TokensPerImage: 1290, Limiter: a.lim, Accounting: &Accounting{Store: a.store,
		Pricer: accounting.NewPricer(&config.Config{Providers: []config.Provider{pc}}),
		Teams:  map[string]*config.Team{"design": team}}})
	return a
}

func (a *redisAdmission) call(t *testing.T, id string, caller auth.Caller) *Call {
	t.Helper()
	req, err := ParseChatRequest([]byte(chatOne))
	if err != nil {
		t.Fatal(err)
	}
	return &Call{ID: id, Caller: &caller, Req: req}
}

func (a *redisAdmission) reserved(t *testing.T) int64 {
	t.Helper()
	n, err := a.store.Reserved(context.Background(), "design", "")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAdmissionIsOneRoundTrip: with the limiter and the budget store on one
// Redis, admitting a request is one pipeline on the limiter's client and
// nothing on the store's; a request the limiter refuses leaves no
// reservation behind, though its reservation travelled with the decision.
func TestAdmissionIsOneRoundTrip(t *testing.T) {
	a := newRedisAdmission(t, 100)
	ctx := context.Background()
	caller := auth.Caller{Name: "ci", Team: "design", RPM: 2}
	if err := a.g.admit(ctx, a.call(t, "req1", caller)); err != nil { // loads the scripts
		t.Fatal(err)
	}
	one := a.reserved(t)
	a.limRT.n.Store(0)
	a.storeRT.n.Store(0)
	c2 := a.call(t, "req2", caller)
	if err := a.g.admit(ctx, c2); err != nil {
		t.Fatal(err)
	}
	if l, s := a.limRT.n.Load(), a.storeRT.n.Load(); l != 1 || s != 0 {
		t.Fatalf("admission: %d round trips on the limiter's client, %d on the store's", l, s)
	}
	if c2.resv == nil || c2.Limit == nil || !c2.Limit.Allowed || !c2.charged {
		t.Fatalf("admitted call holds resv %v limit %+v charged %v", c2.resv, c2.Limit, c2.charged)
	}
	if got := a.reserved(t); got != 2*one || one <= 0 {
		t.Fatalf("reserved %d after two admissions of %d", got, one)
	}
	c3 := a.call(t, "req3", caller)
	if err := a.g.admit(ctx, c3); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("third request in a minute at 2 RPM: %v", err)
	}
	if got := a.reserved(t); got != 2*one || c3.resv != nil {
		t.Fatalf("reserved %d after a refusal, want %d", got, 2*one)
	}
	if c3.Limit == nil || c3.Limit.Refused != ratelimit.RefusedKeyRPM {
		t.Fatalf("refusal %+v", c3.Limit)
	}
}

// TestBudgetRefusalRefundsTheLimits: a reservation the budget refuses, sent
// with the limiter's decision, gives the tokens it was charged back.
func TestBudgetRefusalRefundsTheLimits(t *testing.T) {
	a := newRedisAdmission(t, 0.01) // less than one image
	ctx := context.Background()
	caller := auth.Caller{Name: "ci", Team: "design", TPM: 100000}
	c := a.call(t, "req1", caller)
	if err := a.g.admit(ctx, c); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("admit: %v", err)
	}
	if c.charged || c.resv != nil {
		t.Fatalf("refused call holds charged %v resv %v", c.charged, c.resv)
	}
	res, err := a.lim.Allow(ctx, ratelimit.Request{Key: "ci", Team: "design", Limits: ratelimit.Limits{KeyTPM: 100000}})
	if err != nil || res.RemainingTokens != 100000 {
		t.Fatalf("TPM after the refund: %+v, %v", res, err)
	}
	if got := a.reserved(t); got != 0 {
		t.Fatalf("reserved %d", got)
	}
}
