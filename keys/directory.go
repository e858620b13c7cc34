package keys

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"nanogate/auth"
	"nanogate/config"
)

// Options tune a Directory; the zero value takes the defaults.
type Options struct {
	Log *zap.Logger
	// Resync is how often the snapshot is compared with the store's
	// version even without a notification (default 30s): the safety net
	// for notifications lost while Redis was away.
	Resync time.Duration
	// Flush is how often last uses go to the store (default 1m).
	Flush time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
}

// Defaults of Options.
const (
	DefaultResync = 30 * time.Second
	DefaultFlush  = time.Minute
)

// Directory is the teams and keys in force on this replica: the store's
// snapshot, the configuration's seed, and the admin operations on both.
type Directory struct {
	store Store
	o     Options
	log   *zap.Logger

	// mu orders writes and refreshes; the request path never takes it.
	mu   sync.Mutex
	data atomic.Pointer[Data]
	seed atomic.Pointer[config.Config]

	seenMu  sync.Mutex
	seen    map[string]*atomic.Int64 // key id -> last use in this process
	flushed map[string]int64         // what the store has of it

	onChange atomic.Pointer[func()]
	kick     chan struct{}
	ctx      context.Context // ends at Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// Open loads the store's teams and keys and starts following changes. A
// store that cannot be read now (Redis away at start) is logged and read
// again at the next resync: until then only the configuration's keys
// answer.
func Open(store Store, seed *config.Config, o Options) *Directory {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Resync <= 0 {
		o.Resync = DefaultResync
	}
	if o.Flush <= 0 {
		o.Flush = DefaultFlush
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	d := &Directory{store: store, o: o, log: o.Log, seen: map[string]*atomic.Int64{}, flushed: map[string]int64{},
		kick: make(chan struct{}, 1)}
	empty := newData()
	empty.Version = -1
	d.data.Store(empty)
	d.seed.Store(seed)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if _, err := d.Refresh(ctx); err != nil {
		d.log.Error("keys: store unreadable at start; only the configuration's keys answer until it is back", zap.Error(err))
	}
	cancel()
	d.ctx, d.cancel = context.WithCancel(context.Background())
	ctx = d.ctx
	d.wg.Add(3)
	go func() {
		defer d.wg.Done()
		store.Watch(ctx, d.poke)
	}()
	go d.follow(ctx)
	go d.flushLoop(ctx)
	return d
}

// poke asks the follower to refresh now.
func (d *Directory) poke() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// follow refreshes on every notification and every Resync.
func (d *Directory) follow(ctx context.Context) {
	defer d.wg.Done()
	t := time.NewTicker(d.o.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := d.Refresh(rctx); err != nil && ctx.Err() == nil {
			d.log.Warn("keys: refresh failed; the last snapshot stays in force", zap.Error(err))
		}
		cancel()
	}
}

// OnChange sets what runs after the snapshot changed (the server builds
// its state anew).
func (d *Directory) OnChange(fn func()) { d.onChange.Store(&fn) }

// SetSeed replaces the configuration whose teams and keys the API lists
// but does not edit (a reload).
func (d *Directory) SetSeed(cfg *config.Config) { d.seed.Store(cfg) }

// Seed is the configuration in force, without the store's teams and keys.
func (d *Directory) Seed() *config.Config { return d.seed.Load() }

// Version is the store version of the snapshot in force, -1 before the
// store was first read.
func (d *Directory) Version() int64 { return d.data.Load().Version }

// Refresh reads the store when its version differs from the snapshot's,
// swaps the snapshot and runs OnChange; it reports whether it changed.
func (d *Directory) Refresh(ctx context.Context) (bool, error) {
	d.mu.Lock()
	changed, err := d.refreshLocked(ctx)
	d.mu.Unlock()
	if changed {
		if fn := d.onChange.Load(); fn != nil {
			(*fn)()
		}
	}
	return changed, err
}

func (d *Directory) refreshLocked(ctx context.Context) (bool, error) {
	v, err := d.store.Version(ctx)
	if err != nil {
		return false, err
	}
	if v == d.data.Load().Version {
		return false, nil
	}
	data, err := d.store.Load(ctx)
	if err != nil {
		return false, err
	}
	d.data.Store(data)
	return true, nil
}

// Close stops following changes and flushes the last uses.
func (d *Directory) Close() {
	d.cancel()
	d.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d.flush(ctx)
}

// flushLoop writes the last uses every Flush.
func (d *Directory) flushLoop(ctx context.Context) {
	defer d.wg.Done()
	t := time.NewTicker(d.o.Flush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			d.flush(fctx)
			cancel()
		}
	}
}

// flush writes the uses seen since the last flush, in one batch.
func (d *Directory) flush(ctx context.Context) {
	d.seenMu.Lock()
	batch := map[string]int64{}
	for id, s := range d.seen {
		if v := s.Load(); v > d.flushed[id] {
			batch[id] = v
		}
	}
	d.seenMu.Unlock()
	if len(batch) == 0 {
		return
	}
	if err := d.store.Touch(ctx, batch); err != nil {
		d.log.Warn("keys: recording last uses failed; retried at the next flush", zap.Error(err))
		return
	}
	d.seenMu.Lock()
	for id, v := range batch {
		d.flushed[id] = max(d.flushed[id], v)
	}
	d.seenMu.Unlock()
}

// seenOf is the last-use word of a key id, the same across snapshots.
func (d *Directory) seenOf(id string) *atomic.Int64 {
	d.seenMu.Lock()
	defer d.seenMu.Unlock()
	s := d.seen[id]
	if s == nil {
		s = new(atomic.Int64)
		d.seen[id] = s
	}
	return s
}

// Table builds the key table of cfg (the configuration's keys, which win a
// clash) and of the snapshot, without the admin key.
func (d *Directory) Table(cfg *config.Config) *auth.Table {
	t := auth.NewTable(cfg.Keys)
	data := d.data.Load()
	now := d.o.Now()
	for _, k := range sortedKeys(data) {
		h, ok := auth.ParseHash(k.Hash)
		if !ok || seedKeyNamed(cfg, k.Name) {
			// A key the file named after it since (a reload) is the
			// file's: one name, one key in limits and usage.
			continue
		}
		c := &auth.Caller{Name: k.Name, Team: k.Team, RPM: k.RPM, TPM: k.TPM, ID: k.ID,
			Revoked: k.RevokedAt != nil, Budget: k.Budget.config(), Seen: d.seenOf(k.ID)}
		if k.ExpiresAt != nil {
			c.Expires = *k.ExpiresAt
		}
		var teamModels []string
		if tm := data.Teams[k.Team]; tm != nil {
			teamModels = tm.Models
		}
		c.Models = auth.ModelSet(modelList(k.Models, teamModels))
		t.Add(h, c, time.Time{})
		if oh, ok := auth.ParseHash(k.OldHash); ok && k.OldUntil != nil && k.OldUntil.After(now) {
			t.Add(oh, c, *k.OldUntil)
		}
	}
	t.Remove(cfg.AdminKey)
	return t
}

func (b *Budget) config() *config.Budget {
	if b == nil {
		return nil
	}
	return &config.Budget{USD: b.USD, Period: b.Period}
}

// Effective is cfg with the snapshot's teams and live keys after its own
// (the configuration's win a clash): what the limits, budgets, usage
// reports and batch lines of a state read. A key joins as key_sha256, with
// the models it may use within its team's.
func (d *Directory) Effective(cfg *config.Config) *config.Config {
	data := d.data.Load()
	if len(data.Teams) == 0 && len(data.Keys) == 0 {
		return cfg
	}
	eff := *cfg
	eff.Teams, eff.Keys = slices.Clone(cfg.Teams), slices.Clone(cfg.Keys)
	for _, t := range sortedTeams(data) {
		if slices.ContainsFunc(cfg.Teams, func(s config.Team) bool { return s.Name == t.Name }) {
			continue
		}
		eff.Teams = append(eff.Teams, config.Team{Name: t.Name, RPM: t.RPM, TPM: t.TPM, Budget: t.Budget.config()})
	}
	now := d.o.Now()
	for _, k := range sortedKeys(data) {
		if k.RevokedAt != nil || (k.ExpiresAt != nil && !now.Before(*k.ExpiresAt)) || seedKeyNamed(cfg, k.Name) {
			continue
		}
		var teamModels []string
		if tm := data.Teams[k.Team]; tm != nil {
			teamModels = tm.Models
		}
		eff.Keys = append(eff.Keys, config.Key{Name: k.Name, Team: k.Team, KeySHA256: k.Hash, RPM: k.RPM, TPM: k.TPM,
			Models: modelList(k.Models, teamModels)})
	}
	return &eff
}

// noModel is the allow-list entry of a key that may use no model (its
// models and its team's have none in common): a list that names no real
// model, where an empty one would mean every model.
const noModel = "\x00"

func seedKeyNamed(cfg *config.Config, name string) bool {
	return slices.ContainsFunc(cfg.Keys, func(s config.Key) bool { return s.Name == name })
}

// modelList is what a key may use: its models within its team's; nil for
// every model.
func modelList(key, team []string) []string {
	switch {
	case len(team) == 0:
		return key
	case len(key) == 0:
		return team
	}
	var out []string
	for _, s := range key {
		if slices.Contains(team, s) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return []string{noModel}
	}
	return out
}

func sortedTeams(data *Data) []*Team {
	out := make([]*Team, 0, len(data.Teams))
	for _, t := range data.Teams {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func sortedKeys(data *Data) []*Key {
	out := make([]*Key, 0, len(data.Keys))
	for _, k := range data.Keys {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// hashOf is the stored form of a secret.
func hashOf(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}
