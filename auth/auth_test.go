package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"sync/atomic"
	"testing"
	"time"

	"nanogate/config"
)

func TestLookupByKeyAndHash(t *testing.T) {
	sum := sha256.Sum256([]byte("hashed-secret"))
	tab := NewTable([]config.Key{
		{Name: "plain", Team: "a", Key: "plain-secret", Models: []string{"m1"}},
		{Name: "hashed", Team: "b", KeySHA256: hex.EncodeToString(sum[:])},
		{Name: "empty"},
	})
	if tab.Len() != 2 {
		t.Fatalf("Len = %d, want 2", tab.Len())
	}
	tests := []struct {
		secret, want string
	}{
		{"plain-secret", "plain"},
		{"hashed-secret", "hashed"},
		{"plain-secreT", ""},
		{"", ""},
		{hex.EncodeToString(sum[:]), ""}, // the hash itself is not a key
	}
	for _, tt := range tests {
		c := tab.Lookup([]byte(tt.secret))
		got := ""
		if c != nil {
			got = c.Name
		}
		if got != tt.want {
			t.Errorf("Lookup(%q) = %q, want %q", tt.secret, got, tt.want)
		}
	}
	c := tab.Lookup([]byte("plain-secret"))
	if !c.Allows("m1") || c.Allows("m2") {
		t.Errorf("model allow-list not applied")
	}
	if !tab.Lookup([]byte("hashed-secret")).Allows("anything") {
		t.Errorf("a key without models must allow every model")
	}
}

func TestEqual(t *testing.T) {
	if !Equal([]byte("a"), []byte("a")) || Equal([]byte("a"), []byte("b")) || Equal(nil, nil) {
		t.Fatal("Equal is wrong")
	}
}

func TestRotatedSecretAnswersUntilItsGraceEnds(t *testing.T) {
	tab := NewTable(nil)
	c := &Caller{Name: "k"}
	old, cur := sha256.Sum256([]byte("old")), sha256.Sum256([]byte("new"))
	tab.Add(cur, c, time.Time{})
	tab.Add(old, c, time.Now().Add(time.Hour))
	gone := sha256.Sum256([]byte("gone"))
	tab.Add(gone, c, time.Now().Add(-time.Second))
	if tab.Lookup([]byte("new")) != c || tab.Lookup([]byte("old")) != c {
		t.Fatal("the new secret and the old one within its grace must both answer")
	}
	if tab.Lookup([]byte("gone")) != nil {
		t.Fatal("a secret whose grace ended still answers")
	}
}

func TestFirstEntryWinsAndAdminKeyIsRemoved(t *testing.T) {
	tab := NewTable([]config.Key{{Name: "file", Key: "shared-secret"}, {Name: "admin-too", Key: "the-admin-key"}})
	tab.Add(sha256.Sum256([]byte("shared-secret")), &Caller{Name: "api"}, time.Time{})
	if got := tab.Lookup([]byte("shared-secret")).Name; got != "file" {
		t.Fatalf("a later entry shadowed the configured key: %q", got)
	}
	tab.Remove("the-admin-key")
	if tab.Lookup([]byte("the-admin-key")) != nil {
		t.Fatal("the admin key answers as a client key")
	}
}

func TestExpiredAndSeen(t *testing.T) {
	now := time.Now()
	c := &Caller{Expires: now}
	if !c.Expired(now) || c.Expired(now.Add(-time.Second)) || (&Caller{}).Expired(now) {
		t.Fatal("Expired is wrong")
	}
	c.Seen = new(atomic.Int64)
	c.MarkSeen(now)
	if c.Seen.Load() != now.Unix() {
		t.Fatal("MarkSeen did not record the use")
	}
	(&Caller{}).MarkSeen(now) // untracked: no panic
}
