package signatures

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"

	"nanogate/internal/redistest"
)

// backends are the stores under the shared suite.
var backends = map[string]func(t *testing.T) Store{
	"memory": func(*testing.T) Store { return NewMemory(0) },
	"redis": func(t *testing.T) Store {
		srv := redistest.Start(t)
		c := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { c.Close() })
		return NewRedis(c, "test:")
	},
}

func forEach(t *testing.T, f func(t *testing.T, s Store)) {
	for name, mk := range backends {
		t.Run(name, func(t *testing.T) { f(t, mk(t)) })
	}
}

var ctx = context.Background()

func TestPutThenGetByEveryKey(t *testing.T) {
	forEach(t, func(t *testing.T, s Store) {
		d := DigestKey(sha256.Sum256([]byte("image one")))
		l := LinkKey("0123456789abcdef.png")
		sig := []byte("Cr8BAY89a1+fake+signature+bytes+for+tests+only+Qm9vaw==")
		if err := s.Put(ctx, []Key{d, l}, sig, time.Hour); err != nil {
			t.Fatal(err)
		}
		sig[0] = 'X' // the store keeps its own copy
		other := DigestKey(sha256.Sum256([]byte("image two")))
		got, err := s.Get(ctx, []Key{other, d, l})
		if err != nil {
			t.Fatal(err)
		}
		want := "Cr8BAY89a1+fake+signature+bytes+for+tests+only+Qm9vaw=="
		if len(got) != 3 || got[0] != nil || string(got[1]) != want || string(got[2]) != want {
			t.Fatalf("Get = %q", got)
		}
	})
}

func TestLaterPutReplacesEarlier(t *testing.T) {
	forEach(t, func(t *testing.T, s Store) {
		k := DigestKey(sha256.Sum256([]byte("same image drawn twice")))
		s.Put(ctx, []Key{k}, []byte("Zmlyc3Q="), time.Hour)
		s.Put(ctx, []Key{k}, []byte("c2Vjb25k"), time.Hour)
		got, err := s.Get(ctx, []Key{k})
		if err != nil || string(got[0]) != "c2Vjb25k" {
			t.Fatalf("Get = %q, %v; want the second signature", got, err)
		}
	})
}

func TestOversizedSignatureIsRefused(t *testing.T) {
	forEach(t, func(t *testing.T, s Store) {
		k := DigestKey(sha256.Sum256([]byte("x")))
		err := s.Put(ctx, []Key{k}, bytes.Repeat([]byte("A"), MaxSignatureBytes+4), time.Hour)
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Put = %v, want ErrTooLarge", err)
		}
		if got, _ := s.Get(ctx, []Key{k}); got[0] != nil {
			t.Fatal("an oversized signature was kept")
		}
	})
}

func TestGetOfNoKeys(t *testing.T) {
	forEach(t, func(t *testing.T, s Store) {
		got, err := s.Get(ctx, nil)
		if err != nil || len(got) != 0 {
			t.Fatalf("Get(nil) = %q, %v", got, err)
		}
	})
}

func TestRedisKeysExpireWithTTL(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	s := NewRedis(c, "pfx:")
	k := LinkKey("abc.png")
	if err := s.Put(ctx, []Key{k}, []byte("c2ln"), 90*time.Minute); err != nil {
		t.Fatal(err)
	}
	ttl, err := c.PTTL(ctx, "pfx:sig:l:abc.png").Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 89*time.Minute || ttl > 90*time.Minute {
		t.Fatalf("PTTL = %v, want just under 90m", ttl)
	}
}

func TestRedisOutageIsAnError(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	defer c.Close()
	s := NewRedis(c, "pfx:")
	srv.Kill()
	k := LinkKey("abc.png")
	if err := s.Put(ctx, []Key{k}, []byte("c2ln"), time.Hour); err == nil {
		t.Error("Put succeeded with Redis down")
	}
	if _, err := s.Get(ctx, []Key{k}); err == nil {
		t.Error("Get succeeded with Redis down")
	}
}

func TestMemoryExpiresWithTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory(0)
		k := DigestKey(sha256.Sum256([]byte("img")))
		m.Put(ctx, []Key{k}, []byte("c2ln"), time.Hour)
		time.Sleep(time.Hour - time.Second)
		if got, _ := m.Get(ctx, []Key{k}); string(got[0]) != "c2ln" {
			t.Fatal("signature gone before its ttl")
		}
		time.Sleep(time.Second)
		if got, _ := m.Get(ctx, []Key{k}); got[0] != nil {
			t.Fatal("signature kept past its ttl")
		}
		if m.Len() != 0 {
			t.Fatalf("Len = %d after expiry", m.Len())
		}
	})
}

func TestMemoryEvictsLeastRecentlyUsed(t *testing.T) {
	sig := []byte(strings.Repeat("A", 1000))
	per := len(DigestKey([32]byte{})) + len(sig) + entryOverhead
	m := NewMemory(3 * per)
	keys := make([]Key, 4)
	for i := range keys {
		keys[i] = DigestKey(sha256.Sum256([]byte{byte(i)}))
	}
	for _, k := range keys[:3] {
		m.Put(ctx, []Key{k}, sig, time.Hour)
	}
	m.Get(ctx, keys[:1]) // the first is now the most recently used
	m.Put(ctx, keys[3:], sig, time.Hour)
	got, _ := m.Get(ctx, keys)
	if got[0] == nil || got[1] != nil || got[2] == nil || got[3] == nil {
		t.Fatalf("kept %v, want all but the least recently used (1)", present(got))
	}
	if m.Len() != 3 {
		t.Fatalf("Len = %d, want 3", m.Len())
	}
}

func TestMemoryStaysWithinItsSize(t *testing.T) {
	m := NewMemory(64 << 10)
	sig := []byte(strings.Repeat("B", 500))
	for i := range 10000 {
		m.Put(ctx, []Key{LinkKey(string(rune('a'+i%26)) + strings.Repeat("x", i%100) + string(rune(i)))}, sig, time.Hour)
	}
	if m.used > m.max {
		t.Fatalf("used %d bytes of %d", m.used, m.max)
	}
	if m.Len() == 0 {
		t.Fatal("store emptied itself")
	}
}

func present(got [][]byte) []bool {
	out := make([]bool, len(got))
	for i, g := range got {
		out[i] = g != nil
	}
	return out
}
