package keys

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"nanogate/internal/redistest"
)

// backend makes a store, and reopen makes another over the same data (a
// restart).
type backend struct {
	open, reopen func(t *testing.T) Store
}

func fileBackend(t *testing.T) backend {
	path := filepath.Join(t.TempDir(), "keys.jsonl")
	open := func(t *testing.T) Store {
		s, err := OpenFile(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	return backend{open: open, reopen: open}
}

func redisBackend(t *testing.T) backend {
	srv := redistest.Start(t)
	open := func(t *testing.T) Store {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { c.Close() })
		return NewRedis(c, "test:")
	}
	return backend{open: open, reopen: open}
}

func TestFileStore(t *testing.T)  { runStoreSuite(t, fileBackend) }
func TestRedisStore(t *testing.T) { runStoreSuite(t, redisBackend) }

// TestRedisClusterStore runs the suite on a 3-node Redis Cluster: a script
// whose keys were not all in one slot would fail with CROSSSLOT.
func TestRedisClusterStore(t *testing.T) {
	addrs := redistest.Addrs(redistest.StartCluster(t))
	runStoreSuite(t, func(t *testing.T) backend {
		prefix := fmt.Sprintf("c%d:", clusterNS.Add(1))
		open := func(t *testing.T) Store {
			c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
			t.Cleanup(func() { c.Close() })
			return NewRedis(c, prefix)
		}
		return backend{open: open, reopen: open}
	})
}

// clusterNS keeps the suite's cases apart on the one cluster.
var clusterNS atomic.Int64

func runStoreSuite(t *testing.T, mk func(*testing.T) backend) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, backend)
	}{
		{"ChangesAreVersionedAuditedAndSurviveARestart", testChangesPersist},
		{"CreateRefusesWhatExists", testCreateRefusesExisting},
		{"TouchKeepsTheLatestUse", testTouch},
		{"MarkIsFirstOnceUntilItEnds", testMark},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, mk(t)) })
	}
}

func ev(id, action string) Event {
	return Event{ID: id, Time: time.Now().UTC(), Actor: "admin:test", Action: action, Target: "x"}
}

func testChangesPersist(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.open(t)
	if v, err := s.Version(ctx); err != nil || v != 0 {
		t.Fatalf("empty store version %d, %v", v, err)
	}
	must(t, s.Apply(ctx, Change{Team: &Team{Name: "design", RPM: 5}, Create: true, Event: ev("e1", "team.create")}))
	must(t, s.Apply(ctx, Change{Key: &Key{ID: "key_1", Name: "ci", Team: "design", Hash: hashOf("s")}, Create: true, Event: ev("e2", "key.create")}))
	must(t, s.Apply(ctx, Change{Team: &Team{Name: "design", RPM: 7}, Event: ev("e3", "team.update")}))
	must(t, s.Apply(ctx, Change{Team: &Team{Name: "gone"}, Create: true, Event: ev("e4", "team.create")}))
	must(t, s.Apply(ctx, Change{DeleteTeam: "gone", Event: ev("e5", "team.delete")}))
	check := func(s Store) {
		t.Helper()
		d, err := s.Load(ctx)
		must(t, err)
		if d.Version != 5 || len(d.Teams) != 1 || d.Teams["design"].RPM != 7 || d.Keys["key_1"].Name != "ci" {
			t.Fatalf("loaded version %d, teams %v, keys %v", d.Version, d.Teams, d.Keys)
		}
		if v, _ := s.Version(ctx); v != d.Version {
			t.Fatalf("Version %d, Load's %d", v, d.Version)
		}
		evs, err := s.Audit(ctx, 2)
		must(t, err)
		if len(evs) != 2 || evs[0].ID != "e5" || evs[1].ID != "e4" {
			t.Fatalf("audit, newest first, limit 2: %+v", evs)
		}
		all, _ := s.Audit(ctx, 100)
		if len(all) != 5 {
			t.Fatalf("audit has %d events, want 5", len(all))
		}
	}
	check(s)
	s.Close()
	check(b.reopen(t))
}

func testCreateRefusesExisting(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.open(t)
	must(t, s.Apply(ctx, Change{Team: &Team{Name: "a"}, Create: true, Event: ev("e1", "team.create")}))
	err := s.Apply(ctx, Change{Team: &Team{Name: "a"}, Create: true, Event: ev("e2", "team.create")})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	if v, _ := s.Version(ctx); v != 1 {
		t.Fatalf("a refused create changed the version to %d", v)
	}
	if evs, _ := s.Audit(ctx, 10); len(evs) != 1 {
		t.Fatalf("a refused create was audited: %d events", len(evs))
	}
}

func testTouch(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.open(t)
	must(t, s.Touch(ctx, map[string]int64{"key_1": 100, "key_2": 50}))
	must(t, s.Touch(ctx, map[string]int64{"key_1": 90}))
	d, err := s.Load(ctx)
	must(t, err)
	if d.Used["key_1"] != 100 || d.Used["key_2"] != 50 || d.Version != 0 {
		t.Fatalf("used %v version %d", d.Used, d.Version)
	}
}

// TestRedisApplyReplayIsANoOp: a script the client retries after losing
// its answer neither doubles the event nor turns a create into "exists".
func TestRedisApplyReplayIsANoOp(t *testing.T) {
	s := redisBackend(t).open(t)
	ctx := context.Background()
	c := Change{Team: &Team{Name: "a"}, Create: true, Event: ev("e1", "team.create")}
	must(t, s.Apply(ctx, c))
	must(t, s.Apply(ctx, c))
	if evs, _ := s.Audit(ctx, 10); len(evs) != 1 {
		t.Fatalf("replayed change audited %d times", len(evs))
	}
	if v, _ := s.Version(ctx); v != 1 {
		t.Fatalf("version %d after a replay, want 1", v)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testMark(t *testing.T, b backend) {
	ctx := context.Background()
	s := b.open(t)
	for i, want := range []bool{true, false} {
		first, err := s.Mark(ctx, "a", time.Time{})
		if err != nil || first != want {
			t.Fatalf("mark %d: %v %v, want %v", i, first, err, want)
		}
	}
	first, err := s.Mark(ctx, "old", time.Now().Add(-time.Second))
	must(t, err)
	if !first {
		t.Fatal("a new id is not first")
	}
	if again, _ := s.Mark(ctx, "old", time.Now().Add(time.Hour)); !again {
		t.Fatal("a mark that ended must be first again")
	}
	s.Close()
	s = b.reopen(t)
	if first, _ := s.Mark(ctx, "a", time.Time{}); first {
		t.Fatal("a mark was forgotten by a restart")
	}
}

// TestFileStoreCompacts: a file that last uses keep growing is rewritten as
// the store's state once it outgrows it: it stays bounded, and a restart
// loads the same teams, keys, last uses, audit trail, version and marks in
// force (the ended ones gone).
func TestFileStoreCompacts(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys.jsonl")
	open := func() *File {
		s, err := OpenFile(path, nil)
		must(t, err)
		s.compactMin, s.compactAt = 8<<10, 8<<10
		return s
	}
	s := open()
	must(t, s.Apply(ctx, Change{Team: &Team{Name: "design", RPM: 5}, Create: true, Event: ev("e1", "team.create")}))
	must(t, s.Apply(ctx, Change{Key: &Key{ID: "key_1", Name: "ci", Team: "design", Hash: hashOf("s")}, Create: true, Event: ev("e2", "key.create")}))
	must(t, s.Apply(ctx, Change{Team: &Team{Name: "gone"}, Create: true, Event: ev("e3", "team.create")}))
	must(t, s.Apply(ctx, Change{DeleteTeam: "gone", Event: ev("e4", "team.delete")}))
	if first, _ := s.Mark(ctx, "forever", time.Time{}); !first {
		t.Fatal("mark")
	}
	if first, _ := s.Mark(ctx, "ended", time.Now().Add(-time.Second)); !first {
		t.Fatal("mark")
	}
	var peak int64
	for i := range 2000 { // a day and a half of a key's last uses
		must(t, s.Touch(ctx, map[string]int64{"key_1": int64(1e9 + i), fmt.Sprintf("key_%d", 2+i%5): int64(i)}))
		peak = max(peak, s.size)
	}
	fi, err := os.Stat(path)
	must(t, err)
	if fi.Size() != s.size || peak > 16<<10+512 {
		t.Fatalf("file of %d bytes (store counts %d), peak %d: not kept within twice its state", fi.Size(), s.size, peak)
	}
	want, err := s.Load(ctx)
	must(t, err)
	wantAudit, _ := s.Audit(ctx, 100)
	s.Close()

	s = open()
	got, err := s.Load(ctx)
	must(t, err)
	gotAudit, _ := s.Audit(ctx, 100)
	if got.Version != 4 || got.Version != want.Version || !maps.Equal(got.Used, want.Used) || got.Used["key_1"] != 1e9+1999 ||
		len(got.Teams) != 1 || got.Teams["design"].RPM != 5 || got.Keys["key_1"].Name != "ci" || len(got.Keys) != 1 {
		t.Fatalf("after compactions and a restart: version %d, teams %v, keys %v, used %v", got.Version, got.Teams, got.Keys, got.Used)
	}
	if len(gotAudit) != 4 || !slices.EqualFunc(gotAudit, wantAudit, func(a, b Event) bool { return a.ID == b.ID }) {
		t.Fatalf("audit %+v, want %+v", gotAudit, wantAudit)
	}
	if first, _ := s.Mark(ctx, "forever", time.Time{}); first {
		t.Fatal("a mark in force was lost by a compaction")
	}
	if _, ended := s.marks["ended"]; ended {
		t.Fatal("an ended mark was kept")
	}
	// Changes after a compaction are appended to the new file.
	must(t, s.Apply(ctx, Change{Team: &Team{Name: "later"}, Create: true, Event: ev("e5", "team.create")}))
	s.Close()
	if d, _ := open().Load(ctx); d.Teams["later"] == nil || d.Version != 5 {
		t.Fatalf("a change after the compaction: teams %v, version %d", d.Teams, d.Version)
	}
}
