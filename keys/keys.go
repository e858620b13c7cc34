// Package keys holds the client keys and teams made at run time through the
// admin API, beside those of the configuration file (the seed, which the API
// lists but never edits). A Store keeps them (Redis, shared by every replica,
// or a file under the data directory for a single one) with an append-only
// audit trail; a Directory keeps a snapshot in memory, builds the auth.Table
// the request path reads, follows changes made by other replicas (a Redis
// notification, and a full resync as the safety net) and records when keys
// are used, coarsely and off the request path.
package keys

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Budget caps spending per period, as a team budget of the configuration.
type Budget struct {
	USD    float64 `json:"usd"`
	Period string  `json:"period"` // daily | monthly | total
}

// Team is a team made through the admin API (or, when listed, one of the
// configuration file, Source "config").
type Team struct {
	Name string `json:"name"`
	RPM  int64  `json:"rpm"`
	TPM  int64  `json:"tpm"`
	// Budget is nil for a team without a spending cap.
	Budget *Budget `json:"budget"`
	// Models the team's keys may use; empty: every model.
	Models []string `json:"models"`
	// Alerts are the percentages of the budget at which an alert fires
	// (DefaultAlerts when empty); AlertWebhookURL receives them.
	Alerts          []int     `json:"alert_thresholds"`
	AlertWebhookURL string    `json:"alert_webhook_url,omitempty"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
	Source          string    `json:"source"`
}

// Key is a client key made through the admin API, as stored: its secret is
// never kept, only the hex SHA-256 of it.
type Key struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	Team   string   `json:"team"`
	Hash   string   `json:"hash"`
	Prefix string   `json:"prefix"`
	RPM    int64    `json:"rpm"`
	TPM    int64    `json:"tpm"`
	Models []string `json:"models"`
	Budget *Budget  `json:"budget"`
	Alerts []int    `json:"alert_thresholds"`
	// AlertWebhookURL receives the alerts of the key's budget.
	AlertWebhookURL string     `json:"alert_webhook_url,omitempty"`
	ExpiresAt       *time.Time `json:"expires_at"`
	RevokedAt       *time.Time `json:"revoked_at"`
	// OldHash is the secret a rotation replaced, which answers until
	// OldUntil.
	OldHash   string     `json:"old_hash,omitempty"`
	OldUntil  *time.Time `json:"old_until,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
}

// KeyInfo is a key as the admin API lists it: never a secret nor a hash.
type KeyInfo struct {
	Object     string     `json:"object"`
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Team       string     `json:"team"`
	Prefix     string     `json:"prefix"`
	RPM        int64      `json:"rpm"`
	TPM        int64      `json:"tpm"`
	Models     []string   `json:"models"`
	Budget     *Budget    `json:"budget"`
	Alerts     []int      `json:"alert_thresholds"`
	AlertURL   string     `json:"alert_webhook_url,omitempty"`
	ExpiresAt  *time.Time `json:"expires_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
	OldUntil   *time.Time `json:"previous_key_valid_until,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at"`
	CreatedAt  *time.Time `json:"created_at"`
	Source     string     `json:"source"`
}

// Event is one change in the audit trail.
type Event struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	// Actor is who made the change: the admin key's id (a short hash of
	// it, never the key) or "dashboard".
	Actor string `json:"actor"`
	// Action is team.create, team.update, team.delete, key.create,
	// key.update, key.revoke or key.rotate.
	Action string `json:"action"`
	// Target is "team:<name>" or "key:<id>".
	Target string          `json:"target"`
	Before json.RawMessage `json:"before"`
	After  json.RawMessage `json:"after"`
}

// Data is everything a Store holds but the audit trail.
type Data struct {
	// Version grows with every change; a replica that holds the same
	// version holds the same teams and keys.
	Version int64
	Teams   map[string]*Team
	Keys    map[string]*Key
	// Used is the unix second each key id was last used.
	Used map[string]int64
}

func newData() *Data {
	return &Data{Teams: map[string]*Team{}, Keys: map[string]*Key{}, Used: map[string]int64{}}
}

// Change is one write: a team or key put or a team deleted, with its audit
// event, applied as one step.
type Change struct {
	Team       *Team
	DeleteTeam string
	Key        *Key
	// Create refuses, with ErrExists, a team or key already there (two
	// replicas creating the same name at once).
	Create bool
	Event  Event
}

// Store keeps teams, keys and the audit trail. Both implementations pass
// one test suite (store_test.go).
type Store interface {
	// Load returns every team and key and the last uses.
	Load(ctx context.Context) (*Data, error)
	// Version is the version Load would return, cheaply.
	Version(ctx context.Context) (int64, error)
	// Apply makes one change and appends its event, as one step, and
	// tells the other replicas.
	Apply(ctx context.Context, c Change) error
	// Touch records last uses (unix seconds by key id); a use older than
	// the one stored changes nothing.
	Touch(ctx context.Context, used map[string]int64) error
	// Audit returns the last limit events, newest first.
	Audit(ctx context.Context, limit int) ([]Event, error)
	// Mark remembers id until until (zero: for ever) and reports whether
	// it was new: what fires once across replicas fires on the replica
	// that marked it first.
	Mark(ctx context.Context, id string, until time.Time) (bool, error)
	// Watch calls changed whenever another replica may have changed
	// something, until ctx ends. It may miss changes (a Redis outage):
	// the Directory resyncs periodically all the same.
	Watch(ctx context.Context, changed func())
	// Close releases what the store holds (never a client it was given).
	Close() error
}

// Sentinel errors of the admin operations.
var (
	// ErrNotFound: no team or key of that name or id.
	ErrNotFound = errors.New("not found")
	// ErrExists: a team or key of that name exists already.
	ErrExists = errors.New("already exists")
	// ErrFromConfig: the team or key comes from the configuration file,
	// which the API does not edit.
	ErrFromConfig = errors.New("defined in the configuration file")
	// ErrInUse: a team that still has keys (delete with force).
	ErrInUse = errors.New("in use")
	// ErrRevoked: a revoked key cannot change.
	ErrRevoked = errors.New("revoked")
)

// FieldError is a request the admin API refuses: Field names the offending
// field.
type FieldError struct {
	Field string
	Msg   string
}

// Error says which field and why.
func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// Sources of listed teams and keys.
const (
	SourceConfig = "config"
	SourceAPI    = "api"
)
