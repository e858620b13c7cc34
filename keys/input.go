package keys

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"time"

	"nanogate/config"
)

// Bounds of what the admin API accepts: no limit a Redis bucket or a float
// of money cannot hold exactly, no list a request could grow without end.
const (
	MaxRPM    = 10_000_000
	MaxTPM    = 1_000_000_000_000
	MaxModels = 100
	MaxAlerts = 10
	// MaxGrace bounds how long a rotated key's old secret keeps working.
	MaxGrace = 30 * 24 * time.Hour
	// DefaultGrace is that time when the rotation does not say.
	DefaultGrace = 24 * time.Hour
)

// DefaultAlerts are the budget percentages at which alerts fire when a
// team or key sets none.
var DefaultAlerts = []int{50, 80, 100}

// nameRE: names end up in Redis keys, log lines and CSV cells.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// fields is a request body's JSON object, field by field.
type fields map[string]json.RawMessage

// decodeFields reads body as a JSON object whose fields are all in
// allowed; an empty body is an empty object when emptyOK.
func decodeFields(body []byte, emptyOK bool, allowed ...string) (fields, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		if emptyOK {
			return fields{}, nil
		}
		return nil, &FieldError{Msg: "the request body must be a JSON object"}
	}
	var f fields
	if err := json.Unmarshal(body, &f); err != nil || f == nil {
		return nil, &FieldError{Msg: "the request body must be a JSON object"}
	}
	for _, name := range sortedNames(f) {
		if !slices.Contains(allowed, name) {
			return nil, &FieldError{Field: name, Msg: "unknown field"}
		}
	}
	return f, nil
}

func sortedNames(f fields) []string {
	names := make([]string, 0, len(f))
	for n := range f {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// has reports whether the field was sent (null included).
func (f fields) has(name string) bool { _, ok := f[name]; return ok }

// null reports whether the field was sent as null.
func (f fields) null(name string) bool { return string(bytes.TrimSpace(f[name])) == "null" }

func (f fields) name(field string, dst *string) error {
	raw, ok := f[field]
	if !ok {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil || !nameRE.MatchString(*dst) {
		return &FieldError{Field: field, Msg: "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"}
	}
	return nil
}

func (f fields) limit(field string, dst *int64, max int64) error {
	raw, ok := f[field]
	if !ok {
		return nil
	}
	if f.null(field) {
		*dst = 0
		return nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil || n < 0 || n > max {
		return &FieldError{Field: field, Msg: fmt.Sprintf("must be an integer from 0 (no limit) to %d", max)}
	}
	*dst = n
	return nil
}

func (f fields) budget(dst **Budget) error {
	raw, ok := f["budget"]
	if !ok {
		return nil
	}
	if f.null("budget") {
		*dst = nil
		return nil
	}
	sub, err := decodeFields(raw, false, "usd", "period")
	if err != nil {
		if fe, ok := IsFieldError(err); ok && fe.Field != "" {
			return &FieldError{Field: "budget." + fe.Field, Msg: fe.Msg}
		}
		return &FieldError{Field: "budget", Msg: `must be an object {"usd": ..., "period": "daily" | "monthly" | "total"}`}
	}
	b := &Budget{Period: "monthly"}
	if err := json.Unmarshal(sub["usd"], &b.USD); err != nil || !sub.has("usd") ||
		math.IsNaN(b.USD) || math.IsInf(b.USD, 0) || b.USD < 0 || b.USD > config.MaxBudgetUSD {
		return &FieldError{Field: "budget.usd", Msg: fmt.Sprintf("must be a number from 0 to %g", float64(config.MaxBudgetUSD))}
	}
	if sub.has("period") {
		if err := json.Unmarshal(sub["period"], &b.Period); err != nil ||
			(b.Period != "daily" && b.Period != "monthly" && b.Period != "total") {
			return &FieldError{Field: "budget.period", Msg: "must be daily, monthly or total"}
		}
	}
	*dst = b
	return nil
}

func (f fields) models(dst *[]string) error {
	raw, ok := f["models"]
	if !ok {
		return nil
	}
	if f.null("models") {
		*dst = nil
		return nil
	}
	var m []string
	if err := json.Unmarshal(raw, &m); err != nil || len(m) > MaxModels {
		return &FieldError{Field: "models", Msg: fmt.Sprintf("must be a list of at most %d model names, or null for every model", MaxModels)}
	}
	for _, s := range m {
		if s == "" || len(s) > 128 {
			return &FieldError{Field: "models", Msg: "a model name must be 1 to 128 characters"}
		}
	}
	slices.Sort(m)
	*dst = slices.Compact(m)
	return nil
}

func (f fields) alerts(dst *[]int) error {
	raw, ok := f["alert_thresholds"]
	if !ok {
		return nil
	}
	if f.null("alert_thresholds") {
		*dst = nil
		return nil
	}
	var a []int
	if err := json.Unmarshal(raw, &a); err != nil || len(a) > MaxAlerts {
		return &FieldError{Field: "alert_thresholds", Msg: fmt.Sprintf("must be a list of at most %d percentages", MaxAlerts)}
	}
	for _, p := range a {
		if p < 1 || p > 1000 {
			return &FieldError{Field: "alert_thresholds", Msg: "a threshold is a percentage of the budget from 1 to 1000"}
		}
	}
	slices.Sort(a)
	*dst = slices.Compact(a)
	return nil
}

func (f fields) webhook(dst *string) error {
	raw, ok := f["alert_webhook_url"]
	if !ok {
		return nil
	}
	if f.null("alert_webhook_url") {
		*dst = ""
		return nil
	}
	var s string
	err := json.Unmarshal(raw, &s)
	if err == nil && s != "" {
		u, perr := url.Parse(s)
		if perr != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || len(s) > 2048 {
			err = errors.New("bad URL")
		}
	}
	if err != nil {
		return &FieldError{Field: "alert_webhook_url", Msg: "must be an http(s) URL of at most 2048 characters, or null"}
	}
	*dst = s
	return nil
}

func (f fields) expiry(dst **time.Time, now time.Time) error {
	raw, ok := f["expires_at"]
	if !ok {
		return nil
	}
	if f.null("expires_at") {
		*dst = nil
		return nil
	}
	var t time.Time
	if err := json.Unmarshal(raw, &t); err != nil {
		// Unix seconds, as OpenAI's objects carry times.
		var sec int64
		if err := json.Unmarshal(raw, &sec); err != nil || sec <= 0 || sec > 1<<40 {
			return &FieldError{Field: "expires_at", Msg: "must be an RFC 3339 time, unix seconds, or null"}
		}
		t = time.Unix(sec, 0)
	}
	if !t.After(now) {
		return &FieldError{Field: "expires_at", Msg: "must be in the future"}
	}
	t = t.UTC().Truncate(time.Second)
	*dst = &t
	return nil
}

func (f fields) grace(dst *time.Duration) error {
	raw, ok := f["grace_seconds"]
	if !ok {
		return nil
	}
	var sec int64
	if err := json.Unmarshal(raw, &sec); err != nil || sec < 0 || sec > int64(MaxGrace/time.Second) {
		return &FieldError{Field: "grace_seconds", Msg: "must be an integer from 0 to " + strconv.FormatInt(int64(MaxGrace/time.Second), 10)}
	}
	*dst = time.Duration(sec) * time.Second
	return nil
}

func (f fields) str(field string, dst *string) error {
	raw, ok := f[field]
	if !ok || f.null(field) {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return &FieldError{Field: field, Msg: "must be a string"}
	}
	return nil
}

// all runs every decoder and returns the first error.
func all(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
