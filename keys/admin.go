package keys

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"go.uber.org/zap"

	"nanogate/config"
)

// SecretPrefix starts every key the API makes, so that a leaked one is
// recognisable (secret scanners, logs).
const SecretPrefix = "ng-"

// prefixLen is how much of a secret listings show: the prefix and a few
// random characters, to tell keys apart, never enough to guess one.
const prefixLen = len(SecretPrefix) + 6

// configKeyID is the id a key of the configuration file is listed under.
func configKeyID(name string) string { return "cfg-" + name }

// Teams lists every team, the configuration's first, by name.
func (d *Directory) Teams(ctx context.Context) []Team {
	d.Refresh(ctx)
	seed, data := d.seed.Load(), d.data.Load()
	out := make([]Team, 0, len(seed.Teams)+len(data.Teams))
	for _, t := range seed.Teams {
		out = append(out, seedTeam(t))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	for _, t := range sortedTeams(data) {
		if !d.seedTeam(t.Name) {
			out = append(out, *t)
		}
	}
	return out
}

func seedTeam(t config.Team) Team {
	out := Team{Name: t.Name, RPM: t.RPM, TPM: t.TPM, Source: SourceConfig}
	if t.Budget != nil {
		out.Budget = &Budget{USD: t.Budget.USD, Period: t.Budget.Period}
	}
	return out
}

func (d *Directory) seedTeam(name string) bool {
	return slices.ContainsFunc(d.seed.Load().Teams, func(t config.Team) bool { return t.Name == name })
}

// Team returns one team.
func (d *Directory) Team(ctx context.Context, name string) (Team, error) {
	for _, t := range d.Teams(ctx) {
		if t.Name == name {
			return t, nil
		}
	}
	return Team{}, fmt.Errorf("team %q: %w", name, ErrNotFound)
}

// teamFields are what a request may set on a team.
var teamFields = []string{"rpm", "tpm", "budget", "models", "alert_thresholds", "alert_webhook_url"}

// CreateTeam makes a team from a JSON body.
func (d *Directory) CreateTeam(ctx context.Context, actor string, body []byte) (Team, error) {
	f, err := decodeFields(body, false, append([]string{"name"}, teamFields...)...)
	if err != nil {
		return Team{}, err
	}
	var t Team
	if !f.has("name") {
		return Team{}, &FieldError{Field: "name", Msg: "required"}
	}
	if err := all(f.name("name", &t.Name), t.set(f)); err != nil {
		return Team{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.freshLocked(ctx); err != nil {
		return Team{}, err
	}
	if d.seedTeam(t.Name) || d.data.Load().Teams[t.Name] != nil {
		return Team{}, fmt.Errorf("team %q: %w", t.Name, ErrExists)
	}
	now := d.o.Now().UTC()
	t.CreatedAt, t.UpdatedAt, t.Source = now, now, SourceAPI
	err = d.applyLocked(ctx, Change{Team: &t, Create: true}, actor, "team.create", "team:"+t.Name, nil, &t)
	return t, err
}

// set applies the settable fields of f to t.
func (t *Team) set(f fields) error {
	return all(f.limit("rpm", &t.RPM, MaxRPM), f.limit("tpm", &t.TPM, MaxTPM), f.budget(&t.Budget),
		f.models(&t.Models), f.alerts(&t.Alerts), f.webhook(&t.AlertWebhookURL))
}

// UpdateTeam changes the fields a JSON body sends (null clears one).
func (d *Directory) UpdateTeam(ctx context.Context, actor, name string, body []byte) (Team, error) {
	f, err := decodeFields(body, false, teamFields...)
	if err != nil {
		return Team{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	old, err := d.apiTeamLocked(ctx, name)
	if err != nil {
		return Team{}, err
	}
	t := *old
	if err := t.set(f); err != nil {
		return Team{}, err
	}
	t.UpdatedAt = d.o.Now().UTC()
	err = d.applyLocked(ctx, Change{Team: &t}, actor, "team.update", "team:"+name, old, &t)
	return t, err
}

// apiTeamLocked is a team of the store, fresh.
func (d *Directory) apiTeamLocked(ctx context.Context, name string) (*Team, error) {
	if d.seedTeam(name) {
		return nil, fmt.Errorf("team %q: %w", name, ErrFromConfig)
	}
	if err := d.freshLocked(ctx); err != nil {
		return nil, err
	}
	t := d.data.Load().Teams[name]
	if t == nil {
		return nil, fmt.Errorf("team %q: %w", name, ErrNotFound)
	}
	return t, nil
}

// DeleteTeam deletes a team without live keys; with force, its keys are
// revoked first.
func (d *Directory) DeleteTeam(ctx context.Context, actor, name string, force bool) (Team, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old, err := d.apiTeamLocked(ctx, name)
	if err != nil {
		return Team{}, err
	}
	var live []*Key
	for _, k := range sortedKeys(d.data.Load()) {
		if k.Team == name && k.RevokedAt == nil {
			live = append(live, k)
		}
	}
	if len(live) > 0 && !force {
		return Team{}, fmt.Errorf("team %q has %d keys (revoke them, or delete with ?force=true): %w", name, len(live), ErrInUse)
	}
	for _, k := range live {
		if _, err := d.revokeLocked(ctx, actor, k); err != nil {
			return Team{}, err
		}
	}
	err = d.applyLocked(ctx, Change{DeleteTeam: name}, actor, "team.delete", "team:"+name, old, nil)
	return *old, err
}

// Keys lists every key, the configuration's first, never a secret.
func (d *Directory) Keys(ctx context.Context) ([]KeyInfo, error) {
	d.Refresh(ctx)
	// Last uses are not part of the version: read them fresh.
	data, err := d.store.Load(ctx)
	if err != nil {
		return nil, err
	}
	seed := d.seed.Load()
	out := make([]KeyInfo, 0, len(seed.Keys)+len(data.Keys))
	for _, k := range seed.Keys {
		out = append(out, seedKey(k))
	}
	for _, k := range sortedKeys(data) {
		out = append(out, d.info(k, data.Used[k.ID]))
	}
	return out, nil
}

func seedKey(k config.Key) KeyInfo {
	ki := KeyInfo{Object: "api_key", ID: configKeyID(k.Name), Name: k.Name, Team: k.Team, RPM: k.RPM, TPM: k.TPM,
		Models: k.Models, Source: SourceConfig}
	return ki
}

// info is the listing of a stored key with its last use.
func (d *Directory) info(k *Key, used int64) KeyInfo {
	if s := d.seenOf(k.ID).Load(); s > used {
		used = s
	}
	ki := KeyInfo{Object: "api_key", ID: k.ID, Name: k.Name, Team: k.Team, Prefix: k.Prefix, RPM: k.RPM, TPM: k.TPM,
		Models: k.Models, Budget: k.Budget, Alerts: k.Alerts, AlertURL: k.AlertWebhookURL, ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt,
		Source: SourceAPI}
	created := k.CreatedAt
	ki.CreatedAt = &created
	if k.OldUntil != nil && k.OldUntil.After(d.o.Now()) && k.RevokedAt == nil {
		ki.OldUntil = k.OldUntil
	}
	if used > 0 {
		t := time.Unix(used, 0).UTC()
		ki.LastUsedAt = &t
	}
	return ki
}

// Key returns one key's listing by id.
func (d *Directory) Key(ctx context.Context, id string) (KeyInfo, error) {
	all, err := d.Keys(ctx)
	if err != nil {
		return KeyInfo{}, err
	}
	for _, k := range all {
		if k.ID == id {
			return k, nil
		}
	}
	return KeyInfo{}, fmt.Errorf("key %q: %w", id, ErrNotFound)
}

// keyFields are what a request may set on a key.
var keyFields = []string{"rpm", "tpm", "budget", "models", "alert_thresholds", "alert_webhook_url", "expires_at"}

func (k *Key) set(f fields, now time.Time) error {
	return all(f.limit("rpm", &k.RPM, MaxRPM), f.limit("tpm", &k.TPM, MaxTPM), f.budget(&k.Budget),
		f.models(&k.Models), f.alerts(&k.Alerts), f.webhook(&k.AlertWebhookURL), f.expiry(&k.ExpiresAt, now))
}

// CreateKey makes a key from a JSON body and returns it with its secret,
// which is never available again.
func (d *Directory) CreateKey(ctx context.Context, actor string, body []byte) (KeyInfo, string, error) {
	f, err := decodeFields(body, false, append([]string{"name", "team"}, keyFields...)...)
	if err != nil {
		return KeyInfo{}, "", err
	}
	if !f.has("name") {
		return KeyInfo{}, "", &FieldError{Field: "name", Msg: "required"}
	}
	now := d.o.Now().UTC()
	k := Key{CreatedAt: now, UpdatedAt: now}
	if err := all(f.name("name", &k.Name), f.str("team", &k.Team), k.set(f, now)); err != nil {
		return KeyInfo{}, "", err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.freshLocked(ctx); err != nil {
		return KeyInfo{}, "", err
	}
	data, seed := d.data.Load(), d.seed.Load()
	if k.Team != "" && !d.seedTeam(k.Team) && data.Teams[k.Team] == nil {
		return KeyInfo{}, "", &FieldError{Field: "team", Msg: fmt.Sprintf("no team %q", k.Team)}
	}
	if seedKeyNamed(seed, k.Name) ||
		slices.ContainsFunc(sortedKeys(data), func(s *Key) bool { return s.Name == k.Name }) {
		// Names identify keys in limits and usage records: a revoked
		// key's name stays taken, so no new key inherits its spending.
		return KeyInfo{}, "", fmt.Errorf("key name %q: %w", k.Name, ErrExists)
	}
	var id [8]byte
	rand.Read(id[:])
	k.ID = "key_" + hex.EncodeToString(id[:])
	secret := d.newSecret()
	k.Hash, k.Prefix = hashOf(secret), secret[:prefixLen]
	ki := d.info(&k, 0)
	err = d.applyLocked(ctx, Change{Key: &k, Create: true}, actor, "key.create", "key:"+k.ID, nil, &ki)
	return ki, secret, err
}

// newSecret makes a secret from crypto/rand that is no other key's and
// never the admin key.
func (d *Directory) newSecret() string {
	seed := d.seed.Load()
	table := d.Table(seed)
	for {
		var raw [32]byte
		rand.Read(raw[:]) // never fails (crypto/rand panics rather)
		s := SecretPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
		if s != seed.AdminKey && !table.Has(sha256.Sum256([]byte(s))) {
			return s
		}
	}
}

// UpdateKey changes the fields a JSON body sends (null clears one).
func (d *Directory) UpdateKey(ctx context.Context, actor, id string, body []byte) (KeyInfo, error) {
	f, err := decodeFields(body, false, keyFields...)
	if err != nil {
		return KeyInfo{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	old, err := d.apiKeyLocked(ctx, id)
	if err != nil {
		return KeyInfo{}, err
	}
	if old.RevokedAt != nil {
		return KeyInfo{}, fmt.Errorf("key %q: %w", id, ErrRevoked)
	}
	k := *old
	k.UpdatedAt = d.o.Now().UTC()
	if err := k.set(f, k.UpdatedAt); err != nil {
		return KeyInfo{}, err
	}
	before, after := d.info(old, 0), d.info(&k, 0)
	err = d.applyLocked(ctx, Change{Key: &k}, actor, "key.update", "key:"+id, &before, &after)
	return after, err
}

// apiKeyLocked is a key of the store, fresh.
func (d *Directory) apiKeyLocked(ctx context.Context, id string) (*Key, error) {
	if slices.ContainsFunc(d.seed.Load().Keys, func(k config.Key) bool { return configKeyID(k.Name) == id }) {
		return nil, fmt.Errorf("key %q: %w", id, ErrFromConfig)
	}
	if err := d.freshLocked(ctx); err != nil {
		return nil, err
	}
	k := d.data.Load().Keys[id]
	if k == nil {
		return nil, fmt.Errorf("key %q: %w", id, ErrNotFound)
	}
	return k, nil
}

// RevokeKey revokes a key for good; revoking twice changes nothing.
func (d *Directory) RevokeKey(ctx context.Context, actor, id string) (KeyInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old, err := d.apiKeyLocked(ctx, id)
	if err != nil {
		return KeyInfo{}, err
	}
	if old.RevokedAt != nil {
		return d.info(old, 0), nil
	}
	return d.revokeLocked(ctx, actor, old)
}

func (d *Directory) revokeLocked(ctx context.Context, actor string, old *Key) (KeyInfo, error) {
	k := *old
	now := d.o.Now().UTC()
	// The old secret of a rotation stays known until its grace would
	// have ended: it too is refused as revoked, not as unknown.
	k.RevokedAt, k.UpdatedAt = &now, now
	before, after := d.info(old, 0), d.info(&k, 0)
	err := d.applyLocked(ctx, Change{Key: &k}, actor, "key.revoke", "key:"+k.ID, &before, &after)
	return after, err
}

// RotateKey gives a key a new secret; the old one keeps working for the
// grace period the body sets (grace_seconds, default a day). A second
// rotation within the grace period ends the first one's old secret.
func (d *Directory) RotateKey(ctx context.Context, actor, id string, body []byte) (KeyInfo, string, error) {
	f, err := decodeFields(body, true, "grace_seconds")
	if err != nil {
		return KeyInfo{}, "", err
	}
	grace := DefaultGrace
	if err := f.grace(&grace); err != nil {
		return KeyInfo{}, "", err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	old, err := d.apiKeyLocked(ctx, id)
	if err != nil {
		return KeyInfo{}, "", err
	}
	if old.RevokedAt != nil {
		return KeyInfo{}, "", fmt.Errorf("key %q: %w", id, ErrRevoked)
	}
	k := *old
	now := d.o.Now().UTC()
	k.UpdatedAt = now
	k.OldHash, k.OldUntil = "", nil
	if grace > 0 {
		until := now.Add(grace).Truncate(time.Second)
		k.OldHash, k.OldUntil = old.Hash, &until
	}
	secret := d.newSecret()
	k.Hash, k.Prefix = hashOf(secret), secret[:prefixLen]
	before, after := d.info(old, 0), d.info(&k, 0)
	err = d.applyLocked(ctx, Change{Key: &k}, actor, "key.rotate", "key:"+id, &before, &after)
	return after, secret, err
}

// Audit returns the last limit changes, newest first.
func (d *Directory) Audit(ctx context.Context, limit int) ([]Event, error) {
	return d.store.Audit(ctx, limit)
}

// freshLocked reads the store when it changed, so that a write checks
// against what every replica wrote.
func (d *Directory) freshLocked(ctx context.Context) error {
	_, err := d.refreshLocked(ctx)
	return err
}

// applyLocked writes a change with its audit event, logs it, and brings
// the snapshot (and the server's state) up to date before returning: the
// replica that took a change serves it at once.
func (d *Directory) applyLocked(ctx context.Context, c Change, actor, action, target string, before, after any) error {
	var id [8]byte
	rand.Read(id[:])
	c.Event = Event{ID: "evt_" + hex.EncodeToString(id[:]), Time: d.o.Now().UTC(), Actor: actor, Action: action,
		Target: target, Before: marshal(before), After: marshal(after)}
	if err := d.store.Apply(ctx, c); err != nil {
		return err
	}
	d.log.Info("admin change", zap.String("actor", actor), zap.String("action", action), zap.String("target", target),
		zap.ByteString("before", c.Event.Before), zap.ByteString("after", c.Event.After))
	changed, err := d.refreshLocked(ctx)
	if changed {
		if fn := d.onChange.Load(); fn != nil {
			(*fn)()
		}
	}
	return err
}

// marshal is the JSON of an audit side; null for none.
func marshal(v any) json.RawMessage {
	if v == nil {
		return json.RawMessage("null")
	}
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

// IsFieldError reports whether err is a refused request field.
func IsFieldError(err error) (*FieldError, bool) {
	var fe *FieldError
	ok := errors.As(err, &fe)
	return fe, ok
}
