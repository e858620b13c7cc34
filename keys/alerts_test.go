package keys

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"nanogate/accounting"
	"nanogate/config"
	"nanogate/internal/poll"
	"nanogate/internal/redistest"
	"nanogate/internal/webhook"
)

// spendOf answers every read with the team's and the keys' costs.
func spendOf(team *int64, keys map[string]int64) SpendFunc {
	return func(_ context.Context, _ string, periods []string) ([]*accounting.Bucket, error) {
		out := make([]*accounting.Bucket, len(periods))
		for i, p := range periods {
			b := &accounting.Bucket{Period: p, Keys: map[string]*accounting.Totals{}}
			b.Team.CostMicros = *team
			for k, v := range keys {
				b.Keys[k] = &accounting.Totals{CostMicros: v}
			}
			out[i] = b
		}
		return out, nil
	}
}

func TestAlertsFireOncePerThreshold(t *testing.T) {
	ctx := context.Background()
	d := memDir(t)
	_, err := d.CreateTeam(ctx, "a", []byte(`{"name":"web","budget":{"usd":10},"alert_webhook_url":"https://hooks.example/x"}`))
	must(t, err)
	ki, secret, err := d.CreateKey(ctx, "a", []byte(`{"name":"k","team":"web","budget":{"usd":1,"period":"daily"},"alert_thresholds":[90]}`))
	must(t, err)
	var got []Alert
	notify := func(a Alert) { got = append(got, a) }
	team := int64(8_500_000) // $8.50 of $10: 50 and 80 reached
	keys := map[string]int64{"k": 950_000}
	must(t, d.CheckAlerts(ctx, spendOf(&team, keys), notify))
	// The file's team design has no budget: only web's and k's fire.
	if len(got) != 3 || got[0].Threshold != 50 || got[1].Threshold != 80 || got[0].Scope != "team" || got[0].WebhookURL != "https://hooks.example/x" ||
		got[2].Scope != "key" || got[2].Threshold != 90 || got[2].KeyID != ki.ID || string(got[2].Secret) != hashOf(secret) {
		t.Fatalf("first check: %+v", got)
	}
	b, _ := json.Marshal(got[2])
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil || body["spent_usd"] != 0.95 || body["budget_usd"] != 1.0 ||
		body["object"] != "budget.alert" || body["key"] != "k" || body["webhook_url"] != nil {
		t.Fatalf("alert body %s", b)
	}
	got = nil
	must(t, d.CheckAlerts(ctx, spendOf(&team, keys), notify))
	if len(got) != 0 {
		t.Fatalf("alerts fired twice in a period: %+v", got)
	}
	team = 10_000_000
	must(t, d.CheckAlerts(ctx, spendOf(&team, keys), notify))
	if len(got) != 1 || got[0].Threshold != 100 {
		t.Fatalf("the 100%% alert: %+v", got)
	}
}

func TestFileTeamBudgetsAlertWithTheDefaults(t *testing.T) {
	s, err := OpenFile("", nil)
	must(t, err)
	seed := seedConfig()
	seed.Teams[0].Budget = &config.Budget{USD: 1, Period: "monthly"}
	d := Open(s, seed, Options{})
	t.Cleanup(d.Close)
	var got []int
	team := int64(1_000_000)
	must(t, d.CheckAlerts(context.Background(), spendOf(&team, nil), func(a Alert) { got = append(got, a.Threshold) }))
	if len(got) != 3 || got[0] != 50 || got[2] != 100 {
		t.Fatalf("default thresholds: %v", got)
	}
}

// TestAlertsFireOnceAcrossReplicas: two directories on one Redis check
// the same spend; each alert fires on one of them.
func TestAlertsFireOnceAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t)
	seed := seedConfig()
	seed.Teams[0].Budget = &config.Budget{USD: 1, Period: "monthly"}
	var dirs []*Directory
	for range 2 {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { c.Close() })
		d := Open(NewRedis(c, "t:"), seed, Options{})
		t.Cleanup(d.Close)
		dirs = append(dirs, d)
	}
	team := int64(900_000)
	fired := 0
	for _, d := range dirs {
		must(t, d.CheckAlerts(context.Background(), spendOf(&team, nil), func(Alert) { fired++ }))
	}
	if fired != 2 {
		t.Fatalf("50 and 80 fired %d times in all, want 2", fired)
	}
}

func TestAlertWebhookURLIsValidated(t *testing.T) {
	d := memDir(t)
	for _, u := range []string{`"ftp://x"`, `"not a url"`, `"https://"`, `5`} {
		_, err := d.CreateTeam(context.Background(), "a", []byte(`{"name":"w","alert_webhook_url":`+u+`}`))
		if fe, ok := IsFieldError(err); !ok || fe.Field != "alert_webhook_url" {
			t.Errorf("%s: %v", u, err)
		}
	}
}

// TestAlertReachesItsWebhookSigned: a key's budget alert, from the spend
// that reached it to a loopback receiver, signed with the hex SHA-256 of
// the key as its owner can check it, named as a budget alert.
func TestAlertReachesItsWebhookSigned(t *testing.T) {
	var mu sync.Mutex
	var hdr http.Header
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		hdr, body = r.Header.Clone(), b
		mu.Unlock()
	}))
	defer srv.Close()
	sender := webhook.New(webhook.Options{AllowAddrs: []netip.AddrPort{netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))}})

	ctx := context.Background()
	d := memDir(t)
	_, err := d.CreateTeam(ctx, "a", []byte(`{"name":"web"}`))
	must(t, err)
	ki, secret, err := d.CreateKey(ctx, "a", []byte(`{"name":"k","team":"web","budget":{"usd":2},"alert_thresholds":[50],"alert_webhook_url":`+
		strconv.Quote(srv.URL+"/hook")+`}`))
	must(t, err)
	team := int64(0)
	must(t, d.CheckAlerts(ctx, spendOf(&team, map[string]int64{"k": 1_000_000}), func(a Alert) { a.Post(sender) }))
	poll.Until(t, 10*time.Second, "the alert at the webhook", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return hdr != nil
	})
	sender.Close(ctx)
	mu.Lock()
	defer mu.Unlock()

	sum := sha256.Sum256([]byte(secret))
	var ts, v1 string
	for _, p := range strings.Split(hdr.Get("x-nanogate-signature"), ",") {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			v1 = v
		}
	}
	mac := hmac.New(sha256.New, []byte(hex.EncodeToString(sum[:])))
	mac.Write([]byte(ts + "." + string(body)))
	if want := hex.EncodeToString(mac.Sum(nil)); ts == "" || v1 != want {
		t.Fatalf("signature %q, want v1=%s", hdr.Get("x-nanogate-signature"), want)
	}
	var a struct {
		Object    string  `json:"object"`
		ID        string  `json:"id"`
		KeyID     string  `json:"key_id"`
		Threshold int     `json:"threshold_percent"`
		Spent     float64 `json:"spent_usd"`
	}
	if err := json.Unmarshal(body, &a); err != nil || a.Object != "budget.alert" || a.KeyID != ki.ID || a.Threshold != 50 || a.Spent != 1 {
		t.Fatalf("body %s", body)
	}
	if hdr.Get("x-nanogate-event") != "budget.alert" || hdr.Get("x-nanogate-event-id") != a.ID || hdr.Get("x-nanogate-batch") != "" {
		t.Fatalf("headers %v", hdr)
	}
}

// TestThresholdsAreThoseWatched: what /v1/usage shows is what the watcher
// fires on: a stored team's own thresholds, the defaults for one that set
// none and for the file's teams, nothing for a budget that is not there.
func TestThresholdsAreThoseWatched(t *testing.T) {
	ctx := context.Background()
	seed := seedConfig()
	seed.Teams[0].Budget = &config.Budget{USD: 1}
	s, err := OpenFile("", nil)
	must(t, err)
	d := Open(s, seed, Options{})
	t.Cleanup(d.Close)
	for _, body := range []string{`{"name":"own","budget":{"usd":5},"alert_thresholds":[25,75]}`, `{"name":"plain","budget":{"usd":5}}`,
		`{"name":"free"}`} {
		_, err := d.CreateTeam(ctx, "a", []byte(body))
		must(t, err)
	}
	withBudget, _, err := d.CreateKey(ctx, "a", []byte(`{"name":"kb","team":"own","budget":{"usd":1},"alert_thresholds":[90]}`))
	must(t, err)
	without, _, err := d.CreateKey(ctx, "a", []byte(`{"name":"kn","team":"own"}`))
	must(t, err)
	for _, c := range []struct {
		team, key         string
		wantTeam, wantKey []int
	}{
		{"design", "", DefaultAlerts, nil},
		{"own", withBudget.ID, []int{25, 75}, []int{90}},
		{"own", without.ID, []int{25, 75}, nil},
		{"plain", "", DefaultAlerts, nil},
		{"free", "", nil, nil},
		{"nobody", "key_none", nil, nil},
	} {
		gotTeam, gotKey := d.Thresholds(c.team, c.key)
		if !slices.Equal(gotTeam, c.wantTeam) || !slices.Equal(gotKey, c.wantKey) || (c.wantTeam == nil) != (gotTeam == nil) {
			t.Errorf("%s/%s: %v %v, want %v %v", c.team, c.key, gotTeam, gotKey, c.wantTeam, c.wantKey)
		}
	}
	// Reached, at the edges: exactly a threshold reaches it; a cent
	// below does not; no budget reaches nothing.
	if got := Reached([]int{50, 80, 100}, 800_000, 1); !slices.Equal(got, []int{50, 80}) {
		t.Errorf("Reached at 80%%: %v", got)
	}
	if got := Reached([]int{50}, 499_999, 1); len(got) != 0 || got == nil {
		t.Errorf("Reached below 50%%: %#v, want an empty list", got)
	}
	if got := Reached([]int{50}, 1<<62, 0); len(got) != 0 {
		t.Errorf("Reached without a budget: %v", got)
	}
}
