package accounting

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nanogate/config"
	"nanogate/internal/redistest"
)

// The one suite both stores pass.

func TestMemoryStore(t *testing.T) { runStoreSuite(t, memoryBackend) }

func TestRedisStore(t *testing.T) {
	srv := redistest.Start(t)
	runStoreSuite(t, redisBackend(newClient(t, srv.Addr)))
}

// TestRedisClusterStore runs the suite on a 3-node Redis Cluster: a script
// whose keys were not all in one slot would fail with CROSSSLOT.
func TestRedisClusterStore(t *testing.T) { runStoreSuite(t, redisBackend(startCluster(t))) }

func runStoreSuite(t *testing.T, newStore backend) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, backend)
	}{
		{"BillsEachRequestAtItsServingProvider", testBilling},
		{"RecordAppliedTwiceCountsOnce", testIdempotent},
		{"UsageQueriesMatchTheRecords", testQueries},
		{"DayMonthAndTotalBuckets", testBuckets},
		{"BudgetRefusesPastTheBudget", testBudgetRefusal},
		{"KeyBudgetReservesForRequestsInFlight", testKeyBudget},
		{"ConcurrentReservesOverspendAtMostOneEstimate", testConcurrentReserves},
		{"ReservationsExpire", testReservationExpiry},
		{"BudgetRollsOverWithThePeriod", testRollover},
		{"ExtremeReservationsStayWithinTheBudget", testExtremeReservations},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore) })
	}
}

var nov25 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// fixture is the README's billing story: two images at the reseller; a failover
// served by Google on the second attempt; a request every provider failed;
// and another team's request the day before.
func fixture(p *Pricer) []Record {
	return []Record{
		served(p, "req-1", nov25, "design-ci", "design", "laozhang", 1, 2, 100, 20),
		served(p, "req-2", nov25.Add(time.Minute), "design-ci", "design", "google", 2, 1, 50, 0),
		failedRecord("req-3", nov25.Add(2*time.Minute), "design-bot", "design", 3),
		served(p, "req-4", nov25.Add(-24*time.Hour), "mkt-1", "marketing", "laozhang", 1, 1, 7, 3),
	}
}

func testBilling(t *testing.T, newStore backend) {
	s := newStore(t, newClock(nov25))
	recs := fixture(NewPricer(testConfig()))
	mustApply(t, s, recs...)

	// $0.035 × 2 + (100 × $0.30 + 20 × $2.50) per million tokens, list at
	// Google's $0.039; the failover at Google's own price; the failed
	// request at nothing.
	if recs[0].CostMicros != 70_080 || recs[0].ListCostMicros != 78_080 {
		t.Fatalf("req-1 costs %d (list %d), want 70080 (78080)", recs[0].CostMicros, recs[0].ListCostMicros)
	}
	if recs[1].CostMicros != 39_015 || recs[1].ListCostMicros != 39_015 {
		t.Fatalf("req-2 costs %d (list %d), want 39015 (39015)", recs[1].CostMicros, recs[1].ListCostMicros)
	}
	b := read(t, s, "design", "2026-11")
	want := Totals{Requests: 2, Failed: 1, Images: 3, PromptTokens: 150, CompletionTokens: 20 + 2580 + 1290,
		ImageTokens: 3870, CostMicros: 109_095, ListCostMicros: 117_095}
	if b.Team != want {
		t.Errorf("team design = %+v\nwant %+v", b.Team, want)
	}
	checkDim(t, "provider laozhang", b.Providers["laozhang"], Totals{Requests: 1, Images: 2, PromptTokens: 100,
		CompletionTokens: 2600, ImageTokens: 2580, CostMicros: 70_080, ListCostMicros: 78_080})
	checkDim(t, "provider google", b.Providers["google"], Totals{Requests: 1, Images: 1, PromptTokens: 50,
		CompletionTokens: 1290, ImageTokens: 1290, CostMicros: 39_015, ListCostMicros: 39_015})
	if len(b.Providers) != 2 {
		t.Errorf("providers %v: the failed request has none", keysOf(b.Providers))
	}
	checkDim(t, "key design-bot", b.Keys["design-bot"], Totals{Failed: 1})
	checkDim(t, "model", b.Models[previewModel], want)
	for _, team := range []string{"design", "marketing"} {
		for _, period := range []string{"2026-11-24", "2026-11-25", "2026-11", PeriodTotal} {
			checkBucket(t, s, recs, team, period)
		}
	}
}

func testIdempotent(t *testing.T, newStore backend) {
	s := newStore(t, newClock(nov25))
	ctx := context.Background()
	recs := fixture(NewPricer(testConfig()))
	for i, r := range recs {
		ok, err := s.Apply(ctx, r)
		if err != nil || !ok {
			t.Fatalf("first Apply of %s = %v, %v; want true", r.ID, ok, err)
		}
		if ok, err = s.Apply(ctx, r); err != nil || ok {
			t.Fatalf("second Apply of %s = %v, %v; want false", r.ID, ok, err)
		}
		n, err := s.ApplyBatch(ctx, recs[:i+1])
		if err != nil || n != 0 {
			t.Fatalf("ApplyBatch of applied records = %d, %v; want 0", n, err)
		}
	}
	extra := served(NewPricer(testConfig()), "req-5", nov25, "design-ci", "design", "laozhang", 1, 1, 0, 0)
	if n, err := s.ApplyBatch(ctx, []Record{extra, recs[0], extra}); err != nil || n != 1 {
		t.Fatalf("ApplyBatch(new, old, new again) = %d, %v; want 1", n, err)
	}
	recs = append(recs, extra)
	for _, period := range []string{"2026-11-25", "2026-11", PeriodTotal} {
		checkBucket(t, s, recs, "design", period)
	}
	if _, err := s.Apply(ctx, Record{Time: nov25}); err == nil {
		t.Error("a record without an id was applied")
	}
}

func testQueries(t *testing.T, newStore backend) {
	s := newStore(t, newClock(nov25))
	ctx := context.Background()
	recs := fixture(NewPricer(testConfig()))
	mustApply(t, s, recs...)
	budget := &config.Budget{USD: 500, Period: "monthly"}

	got, err := KeyUsage(ctx, s, KeyQuery{Key: "design-ci", Team: "design", Budget: budget, Now: nov25})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"period":"2026-11",` +
		`"key":{"name":"design-ci","requests":2,"failed":0,"images":3,"prompt_tokens":150,` +
		`"completion_tokens":3890,"image_tokens":3870,"cost_usd":0.109095,"list_cost_usd":0.117095,"savings_usd":0.008},` +
		`"team":{"name":"design","budget_usd":500,"budget_period":"monthly","budget_current_period":"2026-11",` +
		`"budget_spent_usd":0.109095,"reserved_usd":0,"remaining_usd":499.890905,` +
		`"budget_resets_at":"2026-12-01T00:00:00Z","requests":2,"failed":1,"images":3,"prompt_tokens":150,` +
		`"completion_tokens":3890,"image_tokens":3870,"cost_usd":0.109095,"list_cost_usd":0.117095,"savings_usd":0.008,"sizes":[]}}`
	if string(got) != want {
		t.Errorf("GET /v1/usage =\n%s\nwant\n%s", got, want)
	}
	if !json.Valid(got) {
		t.Error("GET /v1/usage is not valid JSON")
	}
	got, err = KeyUsage(ctx, s, KeyQuery{Key: "solo", Now: nov25})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"period":"2026-11","key":{"name":"solo","requests":0,"failed":0,"images":0,"prompt_tokens":0,` +
		`"completion_tokens":0,"image_tokens":0,"cost_usd":0,"list_cost_usd":0,"savings_usd":0},"team":null}`; string(got) != want {
		t.Errorf("usage of a key without team or records =\n%s\nwant\n%s", got, want)
	}

	teams := []TeamInfo{{"design", budget}, {"idle", nil}, {"marketing", nil}}
	for _, tc := range []struct {
		team, period, from, to string
		wantPeriod             string
		wantTeams              []string
		days                   []string
	}{
		{"", "", "", "", "2026-11", []string{"design", "idle", "marketing"}, nil},
		{"", "2026-11-25", "", "", "2026-11-25", []string{"design", "idle", "marketing"}, nil},
		{"marketing", "total", "", "", "total", []string{"marketing"}, nil},
		{"", "", "2026-11-23", "2026-11-25", "2026-11-23/2026-11-25", []string{"design", "idle", "marketing"},
			[]string{"2026-11-23", "2026-11-24", "2026-11-25"}},
		{"design", "", "2026-11-25", "", "2026-11-25/2026-11-25", []string{"design"}, []string{"2026-11-25"}},
	} {
		q, err := ParseAdminQuery(tc.team, tc.period, tc.from, tc.to, nov25)
		if err != nil {
			t.Fatal(err)
		}
		q.Teams = teams
		rep, err := Admin(ctx, s, q)
		if err != nil {
			t.Fatal(err)
		}
		checkAdminJSON(t, rep.JSON(), recs, tc.wantPeriod, tc.wantTeams, tc.days)
	}

	q, _ := ParseAdminQuery("", "2026-11", "", "", nov25)
	rep, err := Admin(ctx, s, q)
	if err != nil {
		t.Fatal(err)
	}
	wantCSV := "period,team,key,requests,failed,images,prompt_tokens,completion_tokens,image_tokens,cost_usd,list_cost_usd,savings_usd\n" +
		"2026-11-24,marketing,mkt-1,1,0,1,7,1293,1290,0.03501,0.03901,0.004\n" +
		"2026-11-25,design,design-bot,0,1,0,0,0,0,0,0,0\n" +
		"2026-11-25,design,design-ci,2,0,3,150,3890,3870,0.109095,0.117095,0.008\n"
	if got := string(rep.CSV()); got != wantCSV {
		t.Errorf("CSV =\n%s\nwant\n%s", got, wantCSV)
	}
	q, _ = ParseAdminQuery("", "total", "", "", nov25)
	rep, err = Admin(ctx, s, q)
	if err != nil {
		t.Fatal(err)
	}
	wantCSV = "period,team,key,requests,failed,images,prompt_tokens,completion_tokens,image_tokens,cost_usd,list_cost_usd,savings_usd\n" +
		"total,design,design-bot,0,1,0,0,0,0,0,0,0\n" +
		"total,design,design-ci,2,0,3,150,3890,3870,0.109095,0.117095,0.008\n" +
		"total,marketing,mkt-1,1,0,1,7,1293,1290,0.03501,0.03901,0.004\n"
	if got := string(rep.CSV()); got != wantCSV {
		t.Errorf("CSV of total =\n%s\nwant\n%s", got, wantCSV)
	}
}

func testBuckets(t *testing.T, newStore backend) {
	s := newStore(t, newClock(nov25))
	p := NewPricer(testConfig())
	var recs []Record
	// Either side of two month ends and a year end, UTC.
	for i, at := range []time.Time{
		time.Date(2026, 11, 30, 23, 59, 59, 999e6, time.UTC),
		time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 31, 23, 0, 0, 0, time.FixedZone("UTC+5", 5*3600)), // 18:00 UTC
		time.Date(2027, 1, 1, 0, 30, 0, 0, time.FixedZone("UTC+1", 3600)),     // 2026-12-31 23:30 UTC
		time.Date(2027, 1, 1, 0, 30, 0, 0, time.UTC),
	} {
		r := served(p, fmt.Sprint("r", i), at, "k", "t", "laozhang", 1, int64(i+1), 10, 10)
		r.Size = []string{"1K", "4K", ""}[i%3] // totals by size, and records from before sizes
		recs = append(recs, r)
	}
	fail := failedRecord("f", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), "k", "t", 2)
	fail.Size = "4K" // a failed request counts in no size
	recs = append(recs, fail)
	mustApply(t, s, recs...)
	if b := read(t, s, "t", PeriodTotal); len(b.Sizes) != 2 || b.Sizes[SizeKey(previewModel, "4K")].Images != 2+5 ||
		b.Sizes[SizeKey(previewModel, "4K")].Failed != 0 {
		t.Errorf("sizes %v", keysOf(b.Sizes))
	}
	for _, period := range []string{"2026-11-30", "2026-12-01", "2026-12-31", "2027-01-01", "2026-11", "2026-12",
		"2027-01", PeriodTotal} {
		checkBucket(t, s, recs, "t", period)
	}
	if got := read(t, s, "t", "2026-12-31").Team.Requests; got != 2 {
		t.Errorf("2026-12-31 has %d requests, want 2 (days are UTC)", got)
	}
}

func testBudgetRefusal(t *testing.T, newStore backend) {
	s := newStore(t, newClock(nov25))
	ctx := context.Background()
	p := NewPricer(testConfig())
	mustApply(t, s, fixture(p)...) // design spent 109095
	b := config.Budget{USD: 0.15, Period: "monthly"}
	const est = 39_015

	if _, err := s.Reserve(ctx, Ask{ID: "a", Team: "design", Budget: &b, Micros: est}); err != nil {
		t.Fatalf("reserve a (148110 of 150000): %v", err)
	}
	r, err := s.Reserve(ctx, Ask{ID: "b", Team: "design", Budget: &b, Micros: est})
	if !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("reserve b (187125 of 150000) = %v, want ErrBudgetExceeded", err)
	}
	if r.SpentMicros != 109_095 || r.ReservedMicros != est || r.BudgetMicros != 150_000 || r.Period != "2026-11" {
		t.Errorf("refusal = %+v", r)
	}
	// Reserving an id again replaces its estimate.
	if _, err := s.Reserve(ctx, Ask{ID: "a", Team: "design", Budget: &b, Micros: est}); err != nil {
		t.Fatalf("reserve a again: %v", err)
	}
	if n, _ := s.Reserved(ctx, "design", ""); n != est {
		t.Fatalf("reserved %d after reserving a twice, want %d", n, est)
	}
	if err := s.Release(ctx, Reservation{ID: "a", Team: "design"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, Reservation{ID: "a", Team: "design"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reserve(ctx, Ask{ID: "b", Team: "design", Budget: &b, Micros: est}); err != nil {
		t.Fatalf("reserve b after releasing a: %v", err)
	}
	// Applying b's record settles its reservation: the spend replaces it.
	mustApply(t, s, served(p, "b", nov25, "design-ci", "design", "google", 1, 1, 50, 0))
	if n, _ := s.Reserved(ctx, "design", ""); n != 0 {
		t.Fatalf("reserved %d after b's record, want 0", n)
	}
	if _, err := s.Reserve(ctx, Ask{ID: "c", Team: "design", Budget: &b, Micros: 1_890}); err != nil {
		t.Fatalf("reserve the last 1890 micro-dollars: %v", err)
	}
	if _, err := s.Reserve(ctx, Ask{ID: "d", Team: "design", Budget: &b, Micros: 1}); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("reserve past the budget = %v, want ErrBudgetExceeded", err)
	}
	// A failed request settles its reservation and costs nothing.
	mustApply(t, s, failedRecord("c", nov25, "design-ci", "design", 3))
	if got := read(t, s, "design", "2026-11").Team.CostMicros; got != 148_110 {
		t.Errorf("spent %d, want 148110", got)
	}
	if _, err := s.Reserve(ctx, Ask{ID: "d", Team: "design", Budget: &b, Micros: 1_890}); err != nil {
		t.Fatalf("reserve after the failed request released its share: %v", err)
	}
}

// testKeyBudget: a key's own budget counts its records' cost and its
// requests in flight, not its teammates'; with a team budget as well, both
// are checked in one step, the team's first.
func testKeyBudget(t *testing.T, newStore backend) {
	clk := newClock(nov25)
	s := newStore(t, clk)
	ctx := context.Background()
	p := NewPricer(testConfig())
	mustApply(t, s, fixture(p)...) // design-ci spent 109095 on 2026-11-25, design-bot nothing
	kb := config.Budget{USD: 0.15, Period: "daily"}
	const est = 39_015
	ci := func(id string, micros int64) Ask {
		return Ask{ID: id, Team: "design", Key: "design-ci", KeyBudget: &kb, Micros: micros}
	}

	r, err := s.Reserve(ctx, ci("a", est))
	if err != nil {
		t.Fatalf("reserve a (148110 of 150000): %v", err)
	}
	keyReserved := func(key string, want int64) {
		t.Helper()
		if n, err := s.Reserved(ctx, "design", key); err != nil || n != want {
			t.Fatalf("%s has %d reserved (%v), want %d", key, n, err, want)
		}
	}
	keyReserved("design-ci", est)
	if r.KeySpentMicros != 109_095 || r.KeyReservedMicros != 0 || r.KeyPeriod != "2026-11-25" || r.Period != "" {
		t.Errorf("reservation %+v", r)
	}
	r, err = s.Reserve(ctx, ci("b", est))
	if !errors.Is(err, ErrKeyBudgetExceeded) || !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("reserve b while a is in flight = %v, want ErrKeyBudgetExceeded", err)
	}
	if r.KeySpentMicros != 109_095 || r.KeyReservedMicros != est || r.KeyBudgetMicros != 150_000 {
		t.Errorf("refusal %+v", r)
	}
	// A teammate's key has a budget of its own.
	bot := config.Budget{USD: 0.05, Period: "monthly"}
	if _, err := s.Reserve(ctx, Ask{ID: "bot1", Team: "design", Key: "design-bot", KeyBudget: &bot, Micros: est}); err != nil {
		t.Fatalf("another key's reservation: %v", err)
	}
	keyReserved("design-ci", est)
	keyReserved("design-bot", est)
	// The team's budget counts the keys' reservations and is checked
	// first: 109095 spent + 78030 in flight + 39015 > 200000.
	team := config.Budget{USD: 0.2, Period: "monthly"}
	big := config.Budget{USD: 10, Period: "monthly"}
	r, err = s.Reserve(ctx, Ask{ID: "c", Team: "design", Budget: &team, Key: "design-bot", KeyBudget: &big, Micros: est})
	if !errors.Is(err, ErrBudgetExceeded) || errors.Is(err, ErrKeyBudgetExceeded) {
		t.Fatalf("reserve past the team's budget = %v, want the team's ErrBudgetExceeded", err)
	}
	if r.ReservedMicros != 2*est || r.SpentMicros != 109_095 || r.KeySpentMicros != 0 || r.KeyReservedMicros != est {
		t.Errorf("team refusal %+v", r)
	}
	// Reserving an id again replaces its estimate; a release frees it.
	if _, err := s.Reserve(ctx, ci("a", est)); err != nil {
		t.Fatalf("reserve a again: %v", err)
	}
	keyReserved("design-ci", est)
	if err := s.Release(ctx, Reservation{ID: "a", Team: "design"}); err != nil {
		t.Fatal(err)
	}
	keyReserved("design-ci", 0)
	if _, err := s.Reserve(ctx, ci("b", est)); err != nil {
		t.Fatalf("reserve b after a's release: %v", err)
	}
	// b's record settles it: 148110 spent, 1890 left.
	mustApply(t, s, served(p, "b", nov25, "design-ci", "design", "google", 1, 1, 50, 0))
	if _, err := s.Reserve(ctx, ci("d", 1_890)); err != nil {
		t.Fatalf("reserve the last 1890: %v", err)
	}
	if _, err := s.Reserve(ctx, ci("e", 1)); !errors.Is(err, ErrKeyBudgetExceeded) {
		t.Fatalf("reserve past the key's budget = %v, want ErrKeyBudgetExceeded", err)
	}
	// d's request never reports: its reservation expires.
	clk.Add(DefaultReservationTTL + time.Second)
	if _, err := s.Reserve(ctx, ci("e", 1_890)); err != nil {
		t.Fatalf("reserve after d expired: %v", err)
	}
	if n, _ := s.Reserved(ctx, "design", ""); n != 1_890 {
		t.Errorf("team reserved %d, want 1890 (e)", n)
	}
	keyReserved("design-ci", 1_890)
	keyReserved("design-bot", 0) // bot1 expired too
	// A daily budget rolls over at midnight UTC.
	clk.Set(time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC))
	r, err = s.Reserve(ctx, ci("f", 140_000))
	if err != nil || r.KeySpentMicros != 0 || r.KeyPeriod != "2026-11-26" {
		t.Fatalf("the next day: %+v, %v", r, err)
	}
}

func testConcurrentReserves(t *testing.T, newStore backend) {
	s := newStore(t, newClock(nov25))
	ctx := context.Background()
	b := config.Budget{USD: 1, Period: "monthly"}
	// 0.93 spent: room for exactly two requests of $0.035 (0.07).
	mustApply(t, s, Record{ID: "old", Time: nov25, Key: "k", Team: "t", Model: previewModel, Provider: "laozhang",
		Images: 1, CostMicros: 930_000, ListCostMicros: 930_000})
	const est = 35_000
	var admitted atomic.Int64
	var ids sync.Map
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			id := fmt.Sprint("c", i)
			_, err := s.Reserve(ctx, Ask{ID: id, Team: "t", Budget: &b, Micros: est})
			switch {
			case err == nil:
				admitted.Add(1)
				ids.Store(id, true)
			case !errors.Is(err, ErrBudgetExceeded):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := admitted.Load(); got != 2 {
		t.Errorf("admitted %d of 50 concurrent requests with room for 2", got)
	}
	// The admitted requests finish, each costing its estimate.
	ids.Range(func(id, _ any) bool {
		mustApply(t, s, Record{ID: id.(string), Time: nov25, Key: "k", Team: "t", Model: previewModel,
			Provider: "laozhang", Images: 1, CostMicros: est, ListCostMicros: est})
		return true
	})
	spent := read(t, s, "t", "2026-11").Team.CostMicros
	if spent > 1_000_000+est {
		t.Errorf("spent %d of a 1000000 budget: more than one request over", spent)
	}
	if n, _ := s.Reserved(ctx, "t", ""); n != 0 {
		t.Errorf("reserved %d after every request settled", n)
	}
}

func testReservationExpiry(t *testing.T, newStore backend) {
	clk := newClock(nov25)
	s := newStore(t, clk)
	ctx := context.Background()
	b := config.Budget{USD: 0.05, Period: "daily"}
	if _, err := s.Reserve(ctx, Ask{ID: "crashed", Team: "t", Budget: &b, Micros: 40_000}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reserve(ctx, Ask{ID: "next", Team: "t", Budget: &b, Micros: 40_000}); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("reserve next = %v, want ErrBudgetExceeded", err)
	}
	clk.Add(DefaultReservationTTL - time.Second)
	if n, _ := s.Reserved(ctx, "t", ""); n != 40_000 {
		t.Fatalf("reserved %d before the TTL, want 40000", n)
	}
	clk.Add(2 * time.Second)
	if n, _ := s.Reserved(ctx, "t", ""); n != 0 {
		t.Fatalf("reserved %d after the TTL, want 0", n)
	}
	if _, err := s.Reserve(ctx, Ask{ID: "next", Team: "t", Budget: &b, Micros: 40_000}); err != nil {
		t.Fatalf("reserve after the crashed reservation expired: %v", err)
	}

	// Staggered reservations expire each at its own time, whichever was
	// released or expired before it.
	big := config.Budget{USD: 1, Period: "daily"}
	for i, id := range []string{"a", "b", "c"} {
		if i > 0 {
			clk.Add(10 * time.Second)
		}
		if _, err := s.Reserve(ctx, Ask{ID: id, Team: "u", Budget: &big, Micros: 1000}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := s.Reserve(ctx, Ask{ID: "a", Team: "u", Budget: &big, Micros: 1000}) // a again: same reservation, renewed
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, r); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		wait time.Duration
		want int64
	}{
		{DefaultReservationTTL - 20*time.Second - time.Second, 2000}, // b and c
		{12 * time.Second, 1000},                                     // b expired
		{8 * time.Second, 1000},                                      // c not yet
		{2 * time.Second, 0},                                         // c expired
	} {
		clk.Add(step.wait)
		if n, _ := s.Reserved(ctx, "u", ""); n != step.want {
			t.Fatalf("reserved %d, want %d", n, step.want)
		}
	}
}

func testRollover(t *testing.T, newStore backend) {
	ctx := context.Background()
	for _, tc := range []struct {
		period     string
		spendAt    time.Time
		stillAt    time.Time // still refused
		rollsAt    time.Time // admitted again; zero: never
		wantPeriod string
	}{
		{"daily", time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 25, 23, 59, 59, 0, time.UTC),
			time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC), "2026-11-26"},
		{"monthly", time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 30, 23, 59, 59, 0, time.UTC),
			time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), "2026-12"},
		{"total", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
			time.Time{}, ""},
	} {
		t.Run(tc.period, func(t *testing.T) {
			clk := newClock(tc.spendAt)
			s := newStore(t, clk)
			b := config.Budget{USD: 0.035, Period: tc.period}
			if _, err := s.Reserve(ctx, Ask{ID: "spend", Team: "t", Budget: &b, Micros: 35_000}); err != nil {
				t.Fatal(err)
			}
			mustApply(t, s, Record{ID: "spend", Time: tc.spendAt, Key: "k", Team: "t", Model: previewModel,
				Provider: "laozhang", Images: 1, CostMicros: 35_000, ListCostMicros: 39_000})
			clk.Set(tc.stillAt)
			if _, err := s.Reserve(ctx, Ask{ID: "x", Team: "t", Budget: &b, Micros: 1}); !errors.Is(err, ErrBudgetExceeded) {
				t.Fatalf("at %s: %v, want ErrBudgetExceeded", tc.stillAt, err)
			}
			if tc.rollsAt.IsZero() {
				return
			}
			clk.Set(tc.rollsAt)
			r, err := s.Reserve(ctx, Ask{ID: "x", Team: "t", Budget: &b, Micros: 35_000})
			if err != nil {
				t.Fatalf("at %s, a new period: %v", tc.rollsAt, err)
			}
			if r.Period != tc.wantPeriod || r.SpentMicros != 0 {
				t.Errorf("reservation %+v, want period %s with nothing spent", r, tc.wantPeriod)
			}
		})
	}
}

// expected sums records the plain way, as a reference for the stores.
func expected(recs []Record, team, period string, match func(*Record) bool) Totals {
	var t Totals
	for i := range recs {
		r := &recs[i]
		if r.Team != team || !inPeriod(r, period) || !match(r) {
			continue
		}
		if r.Provider == "" {
			t.Failed++
			continue
		}
		t.Requests++
		t.Images += r.Images
		t.PromptTokens += r.PromptTokens
		t.CompletionTokens += r.TextTokens + r.ImageTokens
		t.ImageTokens += r.ImageTokens
		t.CostMicros += r.CostMicros
		t.ListCostMicros += r.ListCostMicros
	}
	return t
}

// checkBucket compares a bucket with the records, for the team and each of
// its keys, models and providers.
func checkBucket(t *testing.T, s Store, recs []Record, team, period string) {
	t.Helper()
	b := read(t, s, team, period)
	all := func(*Record) bool { return true }
	if want := expected(recs, team, period, all); b.Team != want {
		t.Errorf("%s %s: team %+v\nwant %+v", team, period, b.Team, want)
	}
	names := map[byte]map[string]bool{'k': {}, 'm': {}, 'p': {}, 's': {}}
	for i := range recs {
		r := &recs[i]
		if r.Team == team && inPeriod(r, period) {
			for _, d := range r.dims() {
				names[d.kind][d.name] = true
			}
		}
	}
	for kind, set := range names {
		got := b.dim(kind)
		if len(got) != len(set) {
			t.Errorf("%s %s: %c names %v, want %v", team, period, kind, keysOf(got), set)
		}
		for name := range set {
			want := expected(recs, team, period, func(r *Record) bool {
				for _, d := range r.dims() {
					if d.kind == kind && d.name == name {
						return true
					}
				}
				return false
			})
			checkDim(t, fmt.Sprintf("%s %s %c %s", team, period, kind, name), got[name], want)
		}
	}
}

func checkDim(t *testing.T, what string, got *Totals, want Totals) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: missing, want %+v", what, want)
		return
	}
	if *got != want {
		t.Errorf("%s = %+v\nwant %+v", what, *got, want)
	}
}

func keysOf(m map[string]*Totals) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// jsonTotals is the totals members of a report object.
type jsonTotals struct {
	Name             string      `json:"name"`
	Requests         int64       `json:"requests"`
	Failed           int64       `json:"failed"`
	Images           int64       `json:"images"`
	PromptTokens     int64       `json:"prompt_tokens"`
	CompletionTokens int64       `json:"completion_tokens"`
	ImageTokens      int64       `json:"image_tokens"`
	CostUSD          json.Number `json:"cost_usd"`
	ListCostUSD      json.Number `json:"list_cost_usd"`
	SavingsUSD       json.Number `json:"savings_usd"`
	Day              string      `json:"day"`
}

func (j jsonTotals) totals(t *testing.T) Totals {
	return Totals{Requests: j.Requests, Failed: j.Failed, Images: j.Images, PromptTokens: j.PromptTokens,
		CompletionTokens: j.CompletionTokens, ImageTokens: j.ImageTokens, CostMicros: parseUSD(t, j.CostUSD),
		ListCostMicros: parseUSD(t, j.ListCostUSD)}
}

// parseUSD reads a decimal USD number back into micro-dollars exactly.
func parseUSD(t *testing.T, n json.Number) int64 {
	t.Helper()
	s := string(n)
	neg := len(s) > 0 && s[0] == '-'
	if neg {
		s = s[1:]
	}
	var whole, frac int64
	var fd int
	if _, err := fmt.Sscanf(s, "%d", &whole); err != nil {
		t.Fatalf("USD %q: %v", n, err)
	}
	for i := range len(s) {
		if s[i] == '.' {
			for _, c := range s[i+1:] {
				frac = frac*10 + int64(c-'0')
				fd++
			}
		}
	}
	for ; fd < 6; fd++ {
		frac *= 10
	}
	v := whole*1_000_000 + frac
	if neg {
		v = -v
	}
	return v
}

type withDays struct {
	jsonTotals
	Days []jsonTotals `json:"days"`
}

// checkAdminJSON decodes an admin report and compares every total in it
// with the records.
func checkAdminJSON(t *testing.T, raw []byte, recs []Record, period string, teams, days []string) {
	t.Helper()
	var rep struct {
		Period string `json:"period"`
		jsonTotals
		Providers []jsonTotals `json:"providers"`
		Teams     []struct {
			withDays
			BudgetUSD json.Number `json:"budget_usd"`
			Keys      []withDays  `json:"keys"`
			Models    []jsonTotals
			Providers []jsonTotals
		} `json:"teams"`
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&rep); err != nil {
		t.Fatalf("%v in %s", err, raw)
	}
	if rep.Period != period {
		t.Errorf("period %q, want %q", rep.Period, period)
	}
	// The periods whose sum is the report: the period itself or the days.
	sumOver := func(team string, match func(*Record) bool) Totals {
		if days == nil {
			return expected(recs, team, period, match)
		}
		var s Totals
		for _, day := range days {
			s.Add(expected(recs, team, day, match))
		}
		return s
	}
	var got []string
	var all Totals
	for _, tm := range rep.Teams {
		got = append(got, tm.Name)
		want := sumOver(tm.Name, func(*Record) bool { return true })
		all.Add(want)
		if g := tm.totals(t); g != want {
			t.Errorf("%s: team %s = %+v\nwant %+v", period, tm.Name, g, want)
		}
		if tm.Name == "design" && tm.BudgetUSD != "500" {
			t.Errorf("design budget_usd %q, want 500", tm.BudgetUSD)
		}
		for _, k := range tm.Keys {
			want := sumOver(tm.Name, func(r *Record) bool { return r.Key == k.Name })
			if g := k.totals(t); g != want {
				t.Errorf("%s: key %s = %+v\nwant %+v", period, k.Name, g, want)
			}
			if len(k.Days) != len(days) {
				t.Errorf("%s: key %s has %d days, want %d", period, k.Name, len(k.Days), len(days))
			}
		}
		if len(tm.Days) != len(days) {
			t.Errorf("%s: team %s has %d days, want %d", period, tm.Name, len(tm.Days), len(days))
		}
		for i, day := range tm.Days {
			if day.Day != days[i] {
				t.Errorf("day %d is %s, want %s", i, day.Day, days[i])
			}
			if g, w := day.totals(t), expected(recs, tm.Name, days[i], func(*Record) bool { return true }); g != w {
				t.Errorf("%s %s = %+v\nwant %+v", tm.Name, day.Day, g, w)
			}
		}
	}
	if !slices.Equal(got, teams) {
		t.Errorf("%s: teams %v, want %v", period, got, teams)
	}
	if g := rep.totals(t); g != all {
		t.Errorf("%s: totals %+v, want %+v", period, g, all)
	}
	var prov Totals
	for _, p := range rep.Providers {
		prov.Add(p.totals(t))
	}
	all.Failed = 0 // failed requests have no provider
	if prov != all {
		t.Errorf("%s: providers sum to %+v, want %+v", period, prov, all)
	}
}

func inPeriod(r *Record, period string) bool {
	p := periods(r.Time)
	return slices.Contains(p[:], period)
}

// TestSizesCSV: one row per team, model and image size, for finance.
func TestSizesCSV(t *testing.T) {
	s := memoryBackend(t, newClock(nov25))
	p := NewPricer(testConfig())
	a := served(p, "a", nov25, "design-ci", "design", "google", 1, 2, 10, 0)
	a.Size = "1K"
	b := served(p, "b", nov25, "mkt-1", "=marketing", "laozhang", 1, 1, 0, 0)
	b.Size = "1K"
	mustApply(t, s, a, b)
	q, _ := ParseAdminQuery("", "total", "", "", nov25)
	q.Teams = []TeamInfo{{Name: "design"}, {Name: "=marketing"}}
	rep, err := Admin(context.Background(), s, q)
	if err != nil {
		t.Fatal(err)
	}
	want := "period,team,model,size,requests,failed,images,prompt_tokens,completion_tokens,image_tokens,cost_usd,list_cost_usd,savings_usd\n" +
		"total,'=marketing,gemini-2.5-flash-image-preview,1K,1,0,1,0,1290,1290,0.035,0.039,0.004\n" +
		"total,design,gemini-2.5-flash-image-preview,1K,1,0,2,10,2580,2580,0.078003,0.078003,0\n"
	if got := string(rep.SizesCSV()); got != want {
		t.Errorf("sizes CSV =\n%s\nwant\n%s", got, want)
	}
}
