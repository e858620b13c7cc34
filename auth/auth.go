// Package auth maps presented API keys to the configured callers. Keys are
// compared by their SHA-256, so a configured key_sha256 and a plain key work
// the same way and no lookup time depends on how much of a secret matched.
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strings"

	"nanogate/config"
)

// Caller is an authenticated key with the settings requests need.
type Caller struct {
	// Name is the key's configured name: safe to log, never the secret.
	Name string
	Team string
	RPM  int64
	TPM  int64
	// Models the key may use; nil means every model.
	Models map[string]bool
	// OffloadImages overrides images.offload.enabled when set.
	OffloadImages *bool
	WebhookURL    string
}

// Allows reports whether the caller may use model.
func (c *Caller) Allows(model string) bool {
	return c.Models == nil || c.Models[model]
}

// Table finds callers by key.
type Table struct {
	byHash map[[32]byte]*Caller
}

// NewTable builds the table from the configured keys. Keys whose secret is
// empty are left out (config validation reports them).
func NewTable(keys []config.Key) *Table {
	t := &Table{byHash: make(map[[32]byte]*Caller, len(keys))}
	for i := range keys {
		k := &keys[i]
		var h [32]byte
		switch {
		case k.Key != "":
			h = sha256.Sum256([]byte(k.Key))
		case k.KeySHA256 != "":
			b, err := hex.DecodeString(strings.TrimSpace(k.KeySHA256))
			if err != nil || len(b) != 32 {
				continue
			}
			copy(h[:], b)
		default:
			continue
		}
		c := &Caller{Name: k.Name, Team: k.Team, RPM: k.RPM, TPM: k.TPM, OffloadImages: k.OffloadImages, WebhookURL: k.WebhookURL}
		if len(k.Models) > 0 {
			c.Models = make(map[string]bool, len(k.Models))
			for _, m := range k.Models {
				c.Models[m] = true
			}
		}
		t.byHash[h] = c
	}
	return t
}

// Lookup returns the caller for secret, or nil.
func (t *Table) Lookup(secret []byte) *Caller {
	if len(secret) == 0 {
		return nil
	}
	h := sha256.Sum256(secret)
	c := t.byHash[h]
	if c == nil {
		return nil
	}
	return c
}

// Len is the number of usable keys.
func (t *Table) Len() int { return len(t.byHash) }

// Equal compares two secrets in constant time (for the admin key).
func Equal(a, b []byte) bool {
	ha, hb := sha256.Sum256(a), sha256.Sum256(b)
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1 && len(a) > 0
}
