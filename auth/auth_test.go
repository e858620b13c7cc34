package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

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
