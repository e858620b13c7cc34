package accounting

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"nanogate/config"
	"nanogate/internal/redistest"
)

// TestRedisKeysExpire: daily buckets and ids expire, months and totals stay,
// and every key of a team carries the team's hash tag.
func TestRedisKeysExpire(t *testing.T) {
	srv := redistest.Start(t)
	c := newClient(t, srv.Addr)
	ctx := context.Background()
	s := NewRedis(c, &config.Redis{KeyPrefix: "ng:"}, Options{})
	at := time.Now().UTC()
	rec := served(NewPricer(testConfig()), "r1", at, "k", "design", "laozhang", 1, 1, 0, 0)
	if _, err := s.Reserve(ctx, Ask{ID: "r1", Team: "design", Budget: &config.Budget{USD: 1}, Micros: 39_000}); err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, rec)
	day := at.Truncate(24 * time.Hour)
	for key, want := range map[string]time.Duration{
		"{ng:design}:acct:u:" + Day(at):   time.Until(day.Add(24*time.Hour + DefaultDayRetention)),
		"{ng:design}:acct:ids:" + Day(at): time.Until(day.Add(24*time.Hour + DefaultIDWindow)),
		"{ng:design}:acct:u:" + Month(at): -1,
		"{ng:design}:acct:u:total":        -1,
	} {
		ttl, err := c.TTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if want < 0 && ttl != -1 {
			t.Errorf("%s expires in %v, want never", key, ttl)
		}
		if want > 0 && (ttl < want-time.Minute || ttl > want+time.Minute) {
			t.Errorf("%s expires in %v, want about %v", key, ttl, want)
		}
	}
	// A bucket made by this version is marked as keeping key costs, so
	// that no script ever sums them from its combinations.
	for _, per := range []string{Day(at), Month(at), PeriodTotal} {
		if ok, _ := c.HExists(ctx, "{ng:design}:acct:u:"+per, "v|kc").Result(); !ok {
			t.Errorf("bucket %s not marked as keeping key costs", per)
		}
	}
	keys, _ := c.Keys(ctx, "*").Result()
	for _, k := range keys {
		if k != "ng:acct:teams" && k[:len("{ng:design}:acct:")] != "{ng:design}:acct:" {
			t.Errorf("key %q outside the team's hash tag", k)
		}
	}
	if teams, _ := s.Teams(ctx); len(teams) != 1 || teams[0] != "design" {
		t.Errorf("teams %v, want [design]", teams)
	}
}

// TestRedisReloadsItsScriptsAfterAFlush: a Redis that lost its script cache
// (restart, SCRIPT FLUSH) still takes records, pipelined or not, each once.
func TestRedisReloadsItsScriptsAfterAFlush(t *testing.T) {
	srv := redistest.Start(t)
	c := newClient(t, srv.Addr)
	ctx := context.Background()
	s := NewRedis(c, nil, Options{})
	p := NewPricer(testConfig())
	var recs []Record
	for i := range 3 {
		c.ScriptFlush(ctx)
		r := served(p, "r"+string(rune('a'+i)), nov25, "k", "t", "laozhang", 1, 1, 0, 0)
		recs = append(recs, r)
		if n, err := s.ApplyBatch(ctx, []Record{r, r}); err != nil || n != 1 {
			t.Fatalf("ApplyBatch after SCRIPT FLUSH = %d, %v; want 1", n, err)
		}
		c.ScriptFlush(ctx)
		if ok, err := s.Apply(ctx, r); err != nil || ok {
			t.Fatalf("Apply after SCRIPT FLUSH = %v, %v; want false", ok, err)
		}
	}
	checkBucket(t, s, recs, "t", PeriodTotal)
}

// FuzzComboField: any key, model and provider names survive the field
// encoding, and no other field parses as a combination by accident of a
// name.
func FuzzComboField(f *testing.F) {
	f.Add("design-ci", "gemini-2.5-flash-image-preview", "laozhang", "cost")
	f.Add("a|b", "1:2", "", "req")
	f.Add("", "", "", "list")
	f.Add("c3:abc|", "é{ü}", "p|x|", "fail")
	f.Fuzz(func(t *testing.T, key, model, provider, metric string) {
		if metric == "" {
			return
		}
		names, m, ok := parseCombo(comboPrefix(key, model, provider) + metric)
		if !ok || names != [3]string{key, model, provider} || m != metric {
			t.Fatalf("round trip of %q %q %q %q = %q %q %v", key, model, provider, metric, names, m, ok)
		}
		parseCombo(key) // never panics on anything
	})
}

// TestRedisOddNames: names with the separators in them stay apart.
func TestRedisOddNames(t *testing.T) {
	srv := redistest.Start(t)
	s := NewRedis(newClient(t, srv.Addr), nil, Options{})
	p := NewPricer(testConfig())
	recs := []Record{
		served(p, "1", nov25, "a|b", "t", "laozhang", 1, 1, 0, 0),
		served(p, "2", nov25, "a", "t", "laozhang", 1, 2, 0, 0),
		served(p, "3", nov25, "1:a", "t", "google", 1, 3, 0, 0),
		failedRecord("4", nov25, "", "t", 1),
	}
	mustApply(t, s, recs...)
	checkBucket(t, s, recs, "t", PeriodTotal)
}

// TestRedisBatchAddsOnlyNewRecords: a batch is summed per field before it
// is added, yet each record counts once (ids applied before, or twice in
// the batch, add nothing), every record releases its reservation, teams
// and days stay apart, and sums stay exact past 2^53 (values of more than
// 15 digits, and sums that cross 2^52).
func TestRedisBatchAddsOnlyNewRecords(t *testing.T) {
	srv := redistest.Start(t)
	c := newClient(t, srv.Addr)
	ctx := context.Background()
	s := NewRedis(c, &config.Redis{KeyPrefix: "ng:"}, Options{})
	p := NewPricer(testConfig())
	day2 := nov25.Add(24 * time.Hour)
	old := served(p, "old", nov25, "k1", "design", "laozhang", 1, 1, 10, 0)
	mustApply(t, s, old)
	recs := []Record{
		served(p, "a", nov25, "k1", "design", "laozhang", 1, 1, 20, 5),
		served(p, "b", nov25, "k1", "design", "laozhang", 1, 2, 30, 0),
		served(p, "c", nov25, "k2", "design", "google", 1, 1, 0, 0),
		served(p, "d", day2, "k1", "design", "laozhang", 1, 1, 7, 0),
		served(p, "e", nov25, "k1", "other", "laozhang", 1, 1, 1, 0),
		failedRecord("f", nov25, "k1", "design", 2),
	}
	recs[1].Size, recs[2].Size = "1K", "1K"
	huge := served(p, "huge", nov25, "k3", "design", "laozhang", 1, 1, 0, 0)
	huge.CostMicros = 1<<60 + 7
	recs = append(recs, huge)
	for i := range 16 {
		r := served(p, "big"+strconv.Itoa(i), nov25, "k3", "design", "laozhang", 1, 1, 999_999_999_999_999, 0)
		recs = append(recs, r)
	}
	for i := range recs {
		if _, err := s.Reserve(ctx, Ask{ID: recs[i].ID, Team: recs[i].Team, Budget: &config.Budget{USD: 1e12}, Micros: 1000}); err != nil {
			t.Fatal(err)
		}
	}
	batch := append([]Record{old, recs[0]}, recs...) // "old" and "a" again
	n, err := s.ApplyBatch(ctx, batch)
	if err != nil || n != len(recs) {
		t.Fatalf("ApplyBatch = %d, %v; want %d", n, err, len(recs))
	}
	all := append([]Record{old}, recs...)
	for _, team := range []string{"design", "other"} {
		for _, period := range []string{Day(nov25), Day(day2), Month(nov25), PeriodTotal} {
			checkBucket(t, s, all, team, period)
		}
		if r, err := s.Reserved(ctx, team, ""); err != nil || r != 0 {
			t.Errorf("%s: reserved %d, %v after the records", team, r, err)
		}
	}
	var cost int64
	for _, r := range all {
		if r.Team == "design" {
			cost += r.CostMicros
		}
	}
	if got, err := c.HGet(ctx, "{ng:design}:acct:u:total", "t|cost").Int64(); err != nil || got != cost {
		t.Errorf("team cost %d, %v; want %d", got, err, cost)
	}
	if n, err := s.ApplyBatch(ctx, batch); err != nil || n != 0 {
		t.Fatalf("the same batch again = %d, %v; want 0", n, err)
	}
	checkBucket(t, s, all, "design", PeriodTotal)
}

// TestQueuedReservations: reservations queued in one pipeline with commands
// on other slots are made once each, as Reserve makes them, on a fresh Redis
// without the script (the first comes back NOSCRIPT and is made alone) and
// on a cluster, where the pipeline is split by node; the budget refuses the
// one that does not fit.
func TestQueuedReservations(t *testing.T) {
	for name, client := range redisClients() {
		t.Run(name, func(t *testing.T) {
			c := client(t)
			ctx := context.Background()
			s := NewRedis(c, &config.Redis{KeyPrefix: "q:"}, Options{})
			budget := config.Budget{USD: 1, Period: "monthly"} // 1,000,000 micros
			// The first round finds no script (each is made alone), the
			// second takes the pipelined replies.
			for _, round := range []string{"fresh", "loaded"} {
				p := c.Pipeline()
				var calls [3]ReserveCall
				for i, team := range []string{"design", "design", "ops"} {
					QueueReserve(ctx, p, s, Ask{ID: round + strconv.Itoa(i), Team: team + round, Budget: &budget, Micros: 600_000}, &calls[i])
				}
				other := p.Incr(ctx, "q:{elsewhere}:n")
				p.Exec(ctx)
				for i, want := range []error{nil, ErrBudgetExceeded, nil} {
					r, err := calls[i].Result(ctx)
					if !errors.Is(err, want) || r.ID != round+strconv.Itoa(i) {
						t.Fatalf("%s reservation %d: %+v, %v; want %v", round, i, r, err, want)
					}
				}
				if _, err := other.Result(); err != nil {
					t.Fatalf("the other command: %v", err)
				}
				for _, team := range []string{"design", "ops"} {
					if got, err := s.Reserved(ctx, team+round, ""); got != 600_000 || err != nil {
						t.Errorf("%s: reserved %d, %v; want 600000", team+round, got, err)
					}
				}
			}
		})
	}
}

// TestKeyCostsOfAnEarlierVersionsBuckets: buckets written before keys had
// cost fields of their own get them, summed from their combinations, the
// first time a script touches them: a key budget checked against them sees
// the key's whole spend, and a record applied to them counts once.
func TestKeyCostsOfAnEarlierVersionsBuckets(t *testing.T) {
	srv := redistest.Start(t)
	c := newClient(t, srv.Addr)
	ctx := context.Background()
	clk := newClock(nov25)
	s := NewRedis(c, &config.Redis{KeyPrefix: "old:"}, Options{Now: clk.Now})
	p := NewPricer(testConfig())
	mustApply(t, s, fixture(p)...) // design-ci spent 109095 on 2026-11-25
	// What an earlier version left: no per-key cost fields, no mark.
	for _, per := range []string{"2026-11-25", "2026-11", "total"} {
		h := "{old:design}:acct:u:" + per
		fields, err := c.HKeys(ctx, h).Result()
		if err != nil || len(fields) == 0 {
			t.Fatalf("%s: %v, %v", h, fields, err)
		}
		for _, f := range fields {
			if f[0] == 'k' || f == "v|kc" {
				c.HDel(ctx, h, f)
			}
		}
	}
	daily := config.Budget{USD: 0.15, Period: "daily"}
	ask := Ask{ID: "a", Team: "design", Key: "design-ci", KeyBudget: &daily, Micros: 39_015}
	r, err := s.Reserve(ctx, ask)
	if err != nil || r.KeySpentMicros != 109_095 {
		t.Fatalf("reserve against an old daily bucket: %+v, %v; want 109095 spent", r, err)
	}
	ask.ID = "b"
	if _, err := s.Reserve(ctx, ask); !errors.Is(err, ErrKeyBudgetExceeded) {
		t.Fatalf("second reservation = %v, want ErrKeyBudgetExceeded", err)
	}
	// The month's bucket is first touched by a record.
	mustApply(t, s, served(p, "a", nov25, "design-ci", "design", "google", 1, 1, 50, 0))
	for _, per := range []string{"daily", "monthly", "total"} {
		b := config.Budget{USD: 1, Period: per}
		r, err := s.Reserve(ctx, Ask{ID: "m" + per, Team: "design", Key: "design-ci", KeyBudget: &b, Micros: 1})
		if err != nil || r.KeySpentMicros != 148_110 {
			t.Errorf("%s key budget after a record: %+v, %v; want 148110 spent", per, r, err)
		}
	}
	if got := read(t, s, "design", "2026-11").Keys["design-ci"].CostMicros; got != 148_110 {
		t.Errorf("usage says %d", got)
	}
}
