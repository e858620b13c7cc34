package accounting

import (
	"slices"
	"strconv"
	"testing"
)

// TestKeyCacheIsBoundedAndBuildsEachListOnce: a list is built once and
// shared; past maxCachedKeySets lists the cache starts over instead of
// growing with every day and team.
func TestKeyCacheIsBoundedAndBuildsEachListOnce(t *testing.T) {
	var c keyCache[[]string]
	builds := 0
	build := func() []string { builds++; return []string{"k"} }
	a := c.get(keySet{team: "t", period: "2026-12"}, build)
	b := c.get(keySet{team: "t", period: "2026-12"}, build)
	if builds != 1 || &a[0] != &b[0] {
		t.Fatalf("%d builds for one list", builds)
	}
	for i := range 3 * maxCachedKeySets {
		c.get(keySet{team: "t" + strconv.Itoa(i)}, build)
		if len(c.m) > maxCachedKeySets {
			t.Fatalf("%d lists cached (at most %d)", len(c.m), maxCachedKeySets)
		}
	}
}

// TestCachedKeysAreTheKeysOfTheirPeriod: the cached lists name the
// team's buckets of the period asked, under the store's prefix.
func TestCachedKeysAreTheKeysOfTheirPeriod(t *testing.T) {
	s := NewRedis(nil, nil, Options{})
	s.prefix = "p:"
	want := []string{"{p:design}:acct:u:2026-12", "{p:design}:acct:resv", "{p:design}:acct:resv:exp", "{p:design}:acct:resv:sum",
		"{p:design}:acct:resv:keys", "{p:design}:acct:u:2026-12"}
	for range 2 {
		if got := s.reserveKeys("design", "2026-12", ""); !slices.Equal(got, want) {
			t.Fatalf("reserve keys %v, want %v", got, want)
		}
	}
	if got := s.reserveKeys("design", "2027-01", ""); got[0] != "{p:design}:acct:u:2027-01" {
		t.Fatalf("next month's bucket %s", got[0])
	}
	// A key budget of another period reads that period's bucket.
	if got := s.reserveKeys("design", "2026-12", "2026-12-06"); got[0] != "{p:design}:acct:u:2026-12" || got[5] != "{p:design}:acct:u:2026-12-06" {
		t.Fatalf("reserve keys with a daily key budget %v", got)
	}
	got := s.applyKeys("design", [3]string{"2026-12-06", "2026-12", "total"})
	if got[0] != "{p:design}:acct:ids:2026-12-06" || got[3] != "{p:design}:acct:u:total" || len(got) != 8 || cap(got) != 8 {
		t.Fatalf("apply keys %v (cap %d)", got, cap(got))
	}
}
