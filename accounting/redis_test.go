package accounting

import (
	"context"
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
	if _, err := s.Reserve(ctx, "design", config.Budget{USD: 1}, "r1", 39_000); err != nil {
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
