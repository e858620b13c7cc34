package keys

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"

	"nanogate/accounting"
	"nanogate/config"
	"nanogate/internal/safemath"
	"nanogate/internal/webhook"
)

// Alert is a budget threshold a team or a key reached in a budget period.
// Each fires once per period across every replica (the store remembers it).
type Alert struct {
	Object string `json:"object"` // "budget.alert"
	// ID names the alert: scope, name, period and threshold; the same
	// alert never has two ids.
	ID     string `json:"id"`
	Scope  string `json:"scope"` // team | key
	Team   string `json:"team"`
	Key    string `json:"key,omitempty"` // the key's name, for a key's budget
	KeyID  string `json:"key_id,omitempty"`
	Period string `json:"period"`
	// Threshold is the percentage of the budget reached.
	Threshold int             `json:"threshold_percent"`
	BudgetUSD json.RawMessage `json:"budget_usd"`
	SpentUSD  json.RawMessage `json:"spent_usd"`
	Time      time.Time       `json:"time"`

	// WebhookURL is where the alert is posted, "" for the metric and the
	// log only; Secret keys its signature: the hex SHA-256 of the key for
	// a key's budget (as a batch webhook), of the admin key for a team's.
	WebhookURL string `json:"-"`
	Secret     []byte `json:"-"`
}

// Post sends the alert to its webhook, if it has one, as the event
// budget.alert with the alert's id (x-nanogate-event, x-nanogate-event-id),
// signed with its Secret; delivery goes on in the background.
func (a Alert) Post(s *webhook.Sender) {
	if a.WebhookURL == "" || s == nil {
		return
	}
	body, err := json.Marshal(a)
	if err != nil {
		return
	}
	s.Send(a.WebhookURL, a.Secret, webhook.Event{Kind: a.Object, ID: a.ID, Body: body})
}

// AlertInterval is how often budgets are compared with their thresholds:
// an alert fires within about this long of the spend that reached it.
const AlertInterval = 15 * time.Second

// SpendFunc reads a team's usage buckets for periods
// (accounting.Store.Read).
type SpendFunc func(ctx context.Context, team string, periods []string) ([]*accounting.Bucket, error)

// budgetWatch is one budget with its thresholds.
type budgetWatch struct {
	scope, team, key, keyID string
	budget                  config.Budget
	thresholds              []int
	url                     string
	secret                  []byte
}

// watches are the budgets to watch now: the file's teams (default
// thresholds, no webhook), and the store's teams and live keys.
func (d *Directory) watches() []budgetWatch {
	seed, data := d.seed.Load(), d.data.Load()
	adminSum := sha256.Sum256([]byte(seed.AdminKey))
	adminSecret := []byte(hex.EncodeToString(adminSum[:]))
	var out []budgetWatch
	for _, t := range seed.Teams {
		if t.Budget != nil {
			out = append(out, budgetWatch{scope: "team", team: t.Name, budget: *t.Budget, thresholds: DefaultAlerts})
		}
	}
	for _, t := range sortedTeams(data) {
		if t.Budget != nil && !d.seedTeam(t.Name) {
			out = append(out, budgetWatch{scope: "team", team: t.Name, budget: *t.Budget.config(),
				thresholds: orDefault(t.Alerts), url: t.AlertWebhookURL, secret: adminSecret})
		}
	}
	now := d.o.Now()
	for _, k := range sortedKeys(data) {
		if k.Budget != nil && k.RevokedAt == nil && (k.ExpiresAt == nil || now.Before(*k.ExpiresAt)) {
			out = append(out, budgetWatch{scope: "key", team: k.Team, key: k.Name, keyID: k.ID, budget: *k.Budget.config(),
				thresholds: orDefault(k.Alerts), url: k.AlertWebhookURL, secret: []byte(k.Hash)})
		}
	}
	return out
}

func orDefault(a []int) []int {
	if len(a) == 0 {
		return DefaultAlerts
	}
	return a
}

// CheckAlerts looks once at every watched budget and calls notify for each
// threshold reached that no replica has fired in the period yet. A team's
// usage is read once for all its budgets.
func (d *Directory) CheckAlerts(ctx context.Context, spend SpendFunc, notify func(Alert)) error {
	now := d.o.Now()
	byTeam := map[string][]budgetWatch{}
	var teams []string
	for _, w := range d.watches() {
		if _, seen := byTeam[w.team]; !seen {
			teams = append(teams, w.team)
		}
		byTeam[w.team] = append(byTeam[w.team], w)
	}
	var firstErr error
	for _, team := range teams {
		ws := byTeam[team]
		var periods []string
		for _, w := range ws {
			periods = append(periods, accounting.BudgetPeriod(w.budget.Period, now))
		}
		buckets, err := spend(ctx, team, periods)
		if err != nil || len(buckets) != len(periods) {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		for i, w := range ws {
			spent := buckets[i].Team.CostMicros
			if w.scope == "key" {
				spent = 0
				if t := buckets[i].Keys[w.key]; t != nil {
					spent = t.CostMicros
				}
			}
			if err := d.fire(ctx, w, periods[i], spent, now, notify); err != nil && firstErr == nil {
				firstErr = err
			}
		}
	}
	return firstErr
}

// BudgetMicros is a budget in micro-dollars, as usage totals count them.
func BudgetMicros(usd float64) int64 {
	return int64(math.Round(min(usd, config.MaxBudgetUSD) * 1e6))
}

// reached reports whether spent reached pct percent of budget (both in
// micro-dollars): spent*100 >= budget*pct, saturating, so money never
// wraps.
func reached(spent, budget int64, pct int) bool {
	return budget > 0 && safemath.Mul(spent, 100) >= safemath.Mul(budget, int64(pct))
}

// Reached returns the thresholds (percentages) of a budget of usd that
// spent (micro-dollars, in the budget's period) reached: the alerts that
// fired in the period, or fire at the next check (within AlertInterval).
func Reached(thresholds []int, spent int64, usd float64) []int {
	out := []int{}
	for _, pct := range thresholds {
		if reached(spent, BudgetMicros(usd), pct) {
			out = append(out, pct)
		}
	}
	return out
}

// Thresholds are the alert thresholds watched on a team's budget and on a
// key's own (by id), from the snapshot in force (no store read): nil for a
// budget that is not watched (none, or a key of the configuration file,
// which has no budget of its own).
func (d *Directory) Thresholds(team, keyID string) (teamAlerts, keyAlerts []int) {
	seed, data := d.seed.Load(), d.data.Load()
	if i := slices.IndexFunc(seed.Teams, func(t config.Team) bool { return t.Name == team }); i >= 0 {
		if seed.Teams[i].Budget != nil {
			teamAlerts = DefaultAlerts
		}
	} else if t := data.Teams[team]; t != nil && t.Budget != nil {
		teamAlerts = orDefault(t.Alerts)
	}
	if k := data.Keys[keyID]; k != nil && k.Budget != nil {
		keyAlerts = orDefault(k.Alerts)
	}
	return teamAlerts, keyAlerts
}

// fire notifies each threshold of w that spent reached, once.
func (d *Directory) fire(ctx context.Context, w budgetWatch, period string, spent int64, now time.Time, notify func(Alert)) error {
	budget := BudgetMicros(w.budget.USD)
	for _, pct := range w.thresholds {
		if !reached(spent, budget, pct) {
			continue
		}
		name := w.team
		if w.scope == "key" {
			name = w.keyID
		}
		id := "alert_" + w.scope + "_" + name + "_" + period + "_" + strconv.Itoa(pct)
		var until time.Time
		if end := accounting.PeriodEnd(w.budget.Period, now); !end.IsZero() {
			until = end.Add(24 * time.Hour)
		}
		first, err := d.store.Mark(ctx, id, until)
		if err != nil {
			return err
		}
		if !first {
			continue
		}
		notify(Alert{Object: "budget.alert", ID: id, Scope: w.scope, Team: w.team, Key: w.key, KeyID: w.keyID,
			Period: period, Threshold: pct, BudgetUSD: json.RawMessage(accounting.FormatUSD(budget)),
			SpentUSD: json.RawMessage(accounting.FormatUSD(spent)), Time: now.UTC(), WebhookURL: w.url, Secret: w.secret})
	}
	return nil
}

// WatchAlerts runs CheckAlerts every interval until Close.
func (d *Directory) WatchAlerts(every time.Duration, spend SpendFunc, notify func(Alert)) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-d.ctx.Done():
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(d.ctx, every)
			if err := d.CheckAlerts(ctx, spend, notify); err != nil && d.ctx.Err() == nil {
				d.log.Warn("keys: budget alerts not checked", zap.Error(err))
			}
			cancel()
		}
	}()
}
