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
