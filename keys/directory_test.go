package keys

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"nanogate/config"
	"nanogate/internal/poll"
	"nanogate/internal/redistest"
)

const adminKey = "admin-key-0123456789abcdef"

func seedConfig() *config.Config {
	return &config.Config{AdminKey: adminKey,
		Teams: []config.Team{{Name: "design", RPM: 60}},
		Keys:  []config.Key{{Name: "design-ci", Team: "design", Key: "sk-seed-secret"}, {Name: "sneaky", Key: adminKey}}}
}

func openDir(t *testing.T, s Store) *Directory {
	d := Open(s, seedConfig(), Options{})
	t.Cleanup(d.Close)
	return d
}

func memDir(t *testing.T) *Directory {
	s, err := OpenFile("", nil)
	must(t, err)
	return openDir(t, s)
}

func TestKeyLifecycle(t *testing.T) {
	ctx := context.Background()
	d := memDir(t)
	changes := 0
	d.OnChange(func() { changes++ })
	if _, err := d.CreateTeam(ctx, "admin:x", []byte(`{"name":"web","rpm":10,"budget":{"usd":5},"models":["m1","m2"]}`)); err != nil {
		t.Fatal(err)
	}
	ki, secret, err := d.CreateKey(ctx, "admin:x", []byte(`{"name":"web-1","team":"web","models":["m2","m3"],"budget":{"usd":1,"period":"daily"}}`))
	must(t, err)
	if !strings.HasPrefix(secret, SecretPrefix) || len(secret) < 40 || !strings.HasPrefix(secret, ki.Prefix) || ki.Source != SourceAPI {
		t.Fatalf("secret %q, listing %+v", secret, ki)
	}
	tab := d.Table(seedConfig())
	c := tab.Lookup([]byte(secret))
	if c == nil || c.Name != "web-1" || c.Team != "web" || c.ID != ki.ID || c.Budget.USD != 1 || c.Budget.Period != "daily" {
		t.Fatalf("created key's caller: %+v", c)
	}
	if !c.Allows("m2") || c.Allows("m1") || c.Allows("m3") {
		t.Fatalf("a key may use its models within its team's: %v", c.Models)
	}
	if tab.Lookup([]byte(adminKey)) != nil {
		t.Fatal("the admin key answers as a client key")
	}
	if tab.Lookup([]byte("sk-seed-secret")) == nil {
		t.Fatal("the configuration's key does not answer")
	}

	rotated, secret2, err := d.RotateKey(ctx, "admin:x", ki.ID, []byte(`{"grace_seconds":3600}`))
	must(t, err)
	tab = d.Table(seedConfig())
	if secret2 == secret || tab.Lookup([]byte(secret)) == nil || tab.Lookup([]byte(secret2)) == nil || rotated.OldUntil == nil {
		t.Fatal("after a rotation with grace, both secrets answer")
	}
	_, secret3, err := d.RotateKey(ctx, "admin:x", ki.ID, []byte(`{"grace_seconds":0}`))
	must(t, err)
	tab = d.Table(seedConfig())
	if tab.Lookup([]byte(secret2)) != nil || tab.Lookup([]byte(secret)) != nil || tab.Lookup([]byte(secret3)) == nil {
		t.Fatal("a rotation without grace ends the old secrets at once")
	}

	_, err = d.UpdateKey(ctx, "admin:x", ki.ID, []byte(`{"rpm":3,"budget":null}`))
	must(t, err)
	if c := d.Table(seedConfig()).Lookup([]byte(secret3)); c.RPM != 3 || c.Budget != nil {
		t.Fatalf("update not applied: %+v", c)
	}
	_, err = d.RevokeKey(ctx, "admin:x", ki.ID)
	must(t, err)
	if c := d.Table(seedConfig()).Lookup([]byte(secret3)); c == nil || !c.Revoked {
		t.Fatal("a revoked key must stay known, as revoked, so that its refusal says why")
	}
	if _, err := d.UpdateKey(ctx, "admin:x", ki.ID, []byte(`{"rpm":4}`)); !errors.Is(err, ErrRevoked) {
		t.Fatalf("updating a revoked key: %v", err)
	}
	if changes != 6 {
		t.Fatalf("OnChange ran %d times for 6 changes", changes)
	}

	evs, err := d.Audit(ctx, 100)
	must(t, err)
	if len(evs) != 6 || evs[0].Action != "key.revoke" || evs[len(evs)-1].Action != "team.create" {
		t.Fatalf("audit: %+v", evs)
	}
	b, _ := json.Marshal(evs)
	for _, s := range []string{secret, secret2, secret3, hashOf(secret), hashOf(secret3), adminKey} {
		if strings.Contains(string(b), s) {
			t.Fatalf("the audit trail holds a secret or its hash: %s", b)
		}
	}
	if evs[0].Actor != "admin:x" || !strings.Contains(string(evs[0].Before), `"revoked_at":null`) {
		t.Fatalf("revoke event: %+v", evs[0])
	}
}

func TestValidation(t *testing.T) {
	ctx := context.Background()
	d := memDir(t)
	_, err := d.CreateTeam(ctx, "a", []byte(`{"name":"web"}`))
	must(t, err)
	for _, tc := range []struct {
		team  bool
		body  string
		field string
	}{
		{true, `{"name":"x","colour":"red"}`, "colour"},
		{true, `{"name":"bad name"}`, "name"},
		{true, `{"rpm":5}`, "name"},
		{true, `{"name":"x","rpm":-1}`, "rpm"},
		{true, `{"name":"x","tpm":1e13}`, "tpm"},
		{true, `{"name":"x","rpm":1.5}`, "rpm"},
		{true, `{"name":"x","budget":{"usd":-1}}`, "budget.usd"},
		{true, `{"name":"x","budget":{"usd":1e10}}`, "budget.usd"},
		{true, `{"name":"x","budget":{"usd":1,"period":"weekly"}}`, "budget.period"},
		{true, `{"name":"x","budget":{"usd":1,"cap":2}}`, "budget.cap"},
		{true, `{"name":"x","alert_thresholds":[0]}`, "alert_thresholds"},
		{false, `{"name":"k","team":"nope"}`, "team"},
		{false, `{"name":"k","expires_at":"2000-01-01T00:00:00Z"}`, "expires_at"},
		{false, `{"name":"k","secret":"mine"}`, "secret"},
		{false, `[1]`, ""},
	} {
		var err error
		if tc.team {
			_, err = d.CreateTeam(ctx, "a", []byte(tc.body))
		} else {
			_, _, err = d.CreateKey(ctx, "a", []byte(tc.body))
		}
		fe, ok := IsFieldError(err)
		if !ok || fe.Field != tc.field {
			t.Errorf("%s: %v, want a refusal of field %q", tc.body, err, tc.field)
		}
	}
	if _, err := d.CreateTeam(ctx, "a", []byte(`{"name":"design"}`)); !errors.Is(err, ErrExists) {
		t.Errorf("a team named like the configuration's: %v", err)
	}
	if _, _, err := d.CreateKey(ctx, "a", []byte(`{"name":"design-ci"}`)); !errors.Is(err, ErrExists) {
		t.Errorf("a key named like the configuration's: %v", err)
	}
	if _, err := d.UpdateTeam(ctx, "a", "design", []byte(`{"rpm":1}`)); !errors.Is(err, ErrFromConfig) {
		t.Errorf("editing the configuration's team: %v", err)
	}
	if _, err := d.RevokeKey(ctx, "a", "cfg-design-ci"); !errors.Is(err, ErrFromConfig) {
		t.Errorf("revoking the configuration's key: %v", err)
	}
	if _, err := d.UpdateTeam(ctx, "a", "nope", []byte(`{"rpm":1}`)); !errors.Is(err, ErrNotFound) {
		t.Errorf("editing a missing team: %v", err)
	}
}

func TestTeamWithKeysIsDeletedOnlyWithForce(t *testing.T) {
	ctx := context.Background()
	d := memDir(t)
	_, err := d.CreateTeam(ctx, "a", []byte(`{"name":"web"}`))
	must(t, err)
	_, secret, err := d.CreateKey(ctx, "a", []byte(`{"name":"w1","team":"web"}`))
	must(t, err)
	if _, err := d.DeleteTeam(ctx, "a", "web", false); !errors.Is(err, ErrInUse) {
		t.Fatalf("deleting a team with a key: %v", err)
	}
	if _, err := d.DeleteTeam(ctx, "a", "web", true); err != nil {
		t.Fatal(err)
	}
	if c := d.Table(seedConfig()).Lookup([]byte(secret)); c == nil || !c.Revoked {
		t.Fatal("a forced delete must revoke the team's keys")
	}
	if _, err := d.Team(ctx, "web"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted team still listed: %v", err)
	}
	eff := d.Effective(seedConfig())
	if len(eff.Teams) != 1 {
		t.Fatalf("effective teams after the delete: %+v", eff.Teams)
	}
}

func TestEffectiveTeamsAndListings(t *testing.T) {
	ctx := context.Background()
	d := memDir(t)
	_, err := d.CreateTeam(ctx, "a", []byte(`{"name":"web","tpm":9,"budget":{"usd":2.5,"period":"total"}}`))
	must(t, err)
	eff := d.Effective(seedConfig())
	if len(eff.Teams) != 2 || eff.Teams[1].Name != "web" || eff.Teams[1].TPM != 9 || eff.Teams[1].Budget.USD != 2.5 {
		t.Fatalf("effective teams: %+v", eff.Teams)
	}
	_, err = d.UpdateTeam(ctx, "a", "web", []byte(`{"models":["m1"]}`))
	must(t, err)
	ki, _, err := d.CreateKey(ctx, "a", []byte(`{"name":"w","team":"web","models":["m2"]}`))
	must(t, err)
	dead, _, err := d.CreateKey(ctx, "a", []byte(`{"name":"w-revoked","team":"web"}`))
	must(t, err)
	_, err = d.RevokeKey(ctx, "a", dead.ID)
	must(t, err)
	eff = d.Effective(seedConfig())
	if len(eff.Keys) != 3 || eff.Keys[2].Name != "w" || eff.Keys[2].KeySHA256 == "" || eff.Keys[2].Key != "" ||
		len(eff.Keys[2].Models) != 1 || eff.Keys[2].Allows("m1") || eff.Keys[2].Allows("m2") {
		t.Fatalf("effective keys (live ones, by hash, allowed nothing outside the team's models): %+v", eff.Keys)
	}
	_, err = d.RevokeKey(ctx, "a", ki.ID)
	must(t, err)
	teams := d.Teams(ctx)
	if len(teams) != 2 || teams[0].Source != SourceConfig || teams[1].Source != SourceAPI {
		t.Fatalf("teams listing: %+v", teams)
	}
	_, _, err = d.CreateKey(ctx, "a", []byte(`{"name":"k"}`))
	must(t, err)
	keys, err := d.Keys(ctx)
	must(t, err)
	if len(keys) != 5 || keys[0].Source != SourceConfig || keys[4].Source != SourceAPI || keys[4].LastUsedAt != nil {
		t.Fatalf("keys listing: %+v", keys)
	}
}

// TestLastUseIsFlushedOffTheRequestPath: a use the request path marks
// reaches the store at the next flush and the listing.
func TestLastUseIsFlushedOffTheRequestPath(t *testing.T) {
	ctx := context.Background()
	s, err := OpenFile("", nil)
	must(t, err)
	d := openDir(t, s)
	ki, secret, err := d.CreateKey(ctx, "a", []byte(`{"name":"k"}`))
	must(t, err)
	c := d.Table(seedConfig()).Lookup([]byte(secret))
	at := time.Now()
	c.MarkSeen(at)
	d.flush(ctx)
	data, _ := s.Load(ctx)
	if data.Used[ki.ID] != at.Unix() {
		t.Fatalf("stored last use %d, want %d", data.Used[ki.ID], at.Unix())
	}
	got, err := d.Key(ctx, ki.ID)
	must(t, err)
	if got.LastUsedAt == nil || got.LastUsedAt.Unix() != at.Unix() {
		t.Fatalf("listed last use %v", got.LastUsedAt)
	}
}

// TestReplicasFollowEachOther: two directories on one Redis (a single
// node, then a Cluster, where the announcement crosses nodes); a change on
// one reaches the other by notification, well before any resync.
func TestReplicasFollowEachOther(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		srv := redistest.Start(t)
		testReplicasFollow(t, func() redis.UniversalClient { return redis.NewClient(&redis.Options{Addr: srv.Addr}) })
	})
	t.Run("cluster", func(t *testing.T) {
		addrs := redistest.Addrs(redistest.StartCluster(t))
		testReplicasFollow(t, func() redis.UniversalClient { return redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs}) })
	})
}

func testReplicasFollow(t *testing.T, client func() redis.UniversalClient) {
	dir := func() *Directory {
		c := client()
		t.Cleanup(func() { c.Close() })
		d := Open(NewRedis(c, "t:"), seedConfig(), Options{Resync: time.Hour})
		t.Cleanup(d.Close)
		return d
	}
	a, b := dir(), dir()
	ctx := context.Background()
	// b's subscription may not be up yet: keep changing a until b hears.
	var secret string
	poll.Until(t, 10*time.Second, "b to follow a change made on a", func() bool {
		if secret == "" {
			_, s, err := a.CreateKey(ctx, "a", []byte(`{"name":"k"}`))
			must(t, err)
			secret = s
		} else if b.Version() != a.Version() {
			_, err := a.CreateTeam(ctx, "a", []byte(`{"name":"t`+time.Now().Format("150405.000000")+`"}`))
			must(t, err)
		}
		return b.Version() == a.Version()
	})
	if b.Table(seedConfig()).Lookup([]byte(secret)) == nil {
		t.Fatal("b does not know a's key")
	}
}

// TestAFileKeyTakesItsNameBack: a reload that names a file key like a
// run-time key makes the name the file's: the run-time key stops
// answering rather than share limits and usage with it.
func TestAFileKeyTakesItsNameBack(t *testing.T) {
	ctx := context.Background()
	d := memDir(t)
	_, secret, err := d.CreateKey(ctx, "a", []byte(`{"name":"later"}`))
	must(t, err)
	cfg := seedConfig()
	cfg.Keys = append(cfg.Keys, config.Key{Name: "later", Key: "sk-file-later"})
	tab := d.Table(cfg)
	if tab.Lookup([]byte(secret)) != nil || tab.Lookup([]byte("sk-file-later")).Name != "later" {
		t.Fatal("the file's key must own its name")
	}
	if eff := d.Effective(cfg); len(eff.Keys) != len(cfg.Keys) {
		t.Fatalf("effective keys: %+v", eff.Keys)
	}
}

// TestAChangeBeforeTheSubscriptionIsNotMissed: a change made right after a
// replica opened, before its subscription took effect, and one made while
// its subscription's connection was cut, both reach it without a resync:
// each confirmed subscription reads the store again.
func TestAChangeBeforeTheSubscriptionIsNotMissed(t *testing.T) {
	srv := redistest.Start(t)
	ctl := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { ctl.Close() })
	dir := func() *Directory {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { c.Close() })
		d := Open(NewRedis(c, "t:"), seedConfig(), Options{Resync: time.Hour})
		t.Cleanup(d.Close)
		return d
	}
	ctx := context.Background()
	a, b := dir(), dir()
	_, secret, err := a.CreateKey(ctx, "a", []byte(`{"name":"early"}`))
	must(t, err)
	poll.Until(t, 10*time.Second, "b to see the key made as it opened", func() bool { return b.Version() == a.Version() })
	if b.Table(seedConfig()).Lookup([]byte(secret)) == nil {
		t.Fatal("b does not know a's key")
	}

	// Cut every subscriber's connection and change at once: the
	// announcement goes out while b is not subscribed.
	must(t, ctl.ClientKillByFilter(ctx, "TYPE", "pubsub").Err())
	_, err = a.CreateTeam(ctx, "a", []byte(`{"name":"while-cut"}`))
	must(t, err)
	poll.Until(t, 10*time.Second, "b to see the change made while its subscription was cut", func() bool {
		return b.Version() == a.Version()
	})
}
