// Package auth maps presented API keys to their callers. Keys are compared
// by their SHA-256, so a configured key_sha256, a plain key and a key made
// at run time (whose secret is never stored) work the same way, and no
// lookup time depends on how much of a secret matched.
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"nanogate/config"
)

// Caller is an authenticated key with the settings requests need.
type Caller struct {
	// Name is the key's name: safe to log, never the secret. It names the
	// key in limits and usage records, so it is unique among keys.
	Name string
	Team string
	RPM  int64
	TPM  int64
	// Models the key may use; nil means every model.
	Models map[string]bool
	// OffloadImages overrides images.offload.enabled when set.
	OffloadImages *bool
	WebhookURL    string

	// ID is the id of a key made through the admin API, "" for a key of
	// the configuration file.
	ID string
	// Expires is when the key stops working; zero: never.
	Expires time.Time
	// Revoked keys stay in the table so that their refusal can say why.
	Revoked bool
	// Budget caps the key's own spending per period; nil: none.
	Budget *config.Budget
	// Seen is the unix second the key was last used in this process, nil
	// for keys whose use is not tracked; whoever made the caller reads it
	// back (coarsely, off the request path).
	Seen *atomic.Int64
}

// Allows reports whether the caller may use model.
func (c *Caller) Allows(model string) bool {
	return c.Models == nil || c.Models[model]
}

// Expired reports whether the key's expiry has passed at now.
func (c *Caller) Expired(now time.Time) bool {
	return !c.Expires.IsZero() && !now.Before(c.Expires)
}

// MarkSeen records a use at now, writing the shared word at most once a
// second so that a hot key does not bounce it between cores.
func (c *Caller) MarkSeen(now time.Time) {
	if c.Seen == nil {
		return
	}
	if s := now.Unix(); c.Seen.Load() != s {
		c.Seen.Store(s)
	}
}

// entry is one secret's hash in the table: a rotated key's old secret
// answers until its grace period ends.
type entry struct {
	c     *Caller
	until time.Time // zero: no end of its own
}

// Table finds callers by key. It is immutable once handed to requests:
// changes build a new one.
type Table struct {
	byHash map[[32]byte]entry
	// byName indexes the callers by key name, built on first use (batch
	// lines find their key by name); the table does not change once in use.
	nameOnce sync.Once
	byName   map[string]*Caller
}

// NewTable builds the table from the configured keys. Keys whose secret is
// empty are left out (config validation reports them).
func NewTable(keys []config.Key) *Table {
	t := &Table{byHash: make(map[[32]byte]entry, len(keys))}
	for i := range keys {
		k := &keys[i]
		var h [32]byte
		switch {
		case k.Key != "":
			h = sha256.Sum256([]byte(k.Key))
		case k.KeySHA256 != "":
			var ok bool
			if h, ok = ParseHash(k.KeySHA256); !ok {
				continue
			}
		default:
			continue
		}
		c := &Caller{Name: k.Name, Team: k.Team, RPM: k.RPM, TPM: k.TPM, OffloadImages: k.OffloadImages, WebhookURL: k.WebhookURL}
		c.Models = ModelSet(k.Models)
		t.byHash[h] = entry{c: c}
	}
	return t
}

// ModelSet is the allow-list of a key's models; nil for an empty list
// (every model).
func ModelSet(models []string) map[string]bool {
	if len(models) == 0 {
		return nil
	}
	m := make(map[string]bool, len(models))
	for _, s := range models {
		m[s] = true
	}
	return m
}

// ParseHash reads a hex SHA-256.
func ParseHash(s string) ([32]byte, bool) {
	var h [32]byte
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != 32 {
		return h, false
	}
	copy(h[:], b)
	return h, true
}

// Add puts a caller under the hash of its secret, answering until until
// (zero: no end of its own). Only whoever builds a table calls it, before
// the table is in use. A hash already there is kept: the first entry wins,
// so the configuration's keys cannot be shadowed by later ones.
func (t *Table) Add(h [32]byte, c *Caller, until time.Time) {
	if _, dup := t.byHash[h]; dup {
		return
	}
	t.byHash[h] = entry{c: c, until: until}
}

// Has reports whether the hash of a secret is in the table.
func (t *Table) Has(h [32]byte) bool {
	_, ok := t.byHash[h]
	return ok
}

// Remove drops the key whose secret is secret: the admin key is never a
// client key, whatever a configuration says.
func (t *Table) Remove(secret string) {
	if secret != "" {
		delete(t.byHash, sha256.Sum256([]byte(secret)))
	}
}

// Lookup returns the caller for secret, or nil. Revoked and expired keys
// are returned: the caller says why they are refused.
func (t *Table) Lookup(secret []byte) *Caller {
	if len(secret) == 0 {
		return nil
	}
	e, ok := t.byHash[sha256.Sum256(secret)]
	if !ok {
		return nil
	}
	if !e.until.IsZero() && !time.Now().Before(e.until) {
		return nil
	}
	return e.c
}

// ByName returns the caller of the key named name, nil when none. When a
// rotated key answers to two secrets, both are the same caller.
func (t *Table) ByName(name string) *Caller {
	t.nameOnce.Do(func() {
		t.byName = make(map[string]*Caller, len(t.byHash))
		for _, e := range t.byHash {
			if prev := t.byName[e.c.Name]; prev == nil || e.until.IsZero() {
				t.byName[e.c.Name] = e.c
			}
		}
	})
	return t.byName[name]
}

// Len is the number of usable keys.
func (t *Table) Len() int { return len(t.byHash) }

// Equal compares two secrets in constant time (for the admin key).
func Equal(a, b []byte) bool {
	ha, hb := sha256.Sum256(a), sha256.Sum256(b)
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1 && len(a) > 0
}
