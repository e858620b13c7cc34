package accounting

import (
	"context"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"nanogate/config"
)

// TestIDSlot: the gateway's and the batches' ids are sharded by 128
// counters or lines, and every other spelling (leading zeros, upper case,
// a missing part) stays whole in the day's hash, so that no two ids ever
// share a shard and field.
func TestIDSlot(t *testing.T) {
	for _, c := range []struct{ id, shard, field string }{
		{"req_0123456789ab1", "r0123456789ab:0", "1"},
		{"req_0123456789ab3j", "r0123456789ab:0", "127"}, // 3j = 127
		{"req_0123456789ab3k", "r0123456789ab:1", "0"},
		{"req_0123456789ab" + strconv.FormatUint(math.MaxUint64, 36), "r0123456789ab:" + strconv.FormatUint(math.MaxUint64/128, 36), "127"},
		{"req_0123456789ab0", "r0123456789ab:0", "0"},
		{"bAbC12-0-0", "bAbC12:0:0", "0"},
		{"bAbC12-300-2", "bAbC12:2:2", "44"},
		{"ba-b-7-1", "ba-b:0:1", "7"}, // a batch suffix with a dash
		// Spellings that would alias a canonical one stay whole.
		{"req_0123456789ab01", "", "req_0123456789ab01"},
		{"req_0123456789AB1", "", "req_0123456789AB1"},
		{"req_0123456789ag1", "", "req_0123456789ag1"},
		{"req_0123456789abA", "", "req_0123456789abA"},
		{"req_0123456789ab", "", "req_0123456789ab"},
		{"req_0123456789a-1", "", "req_0123456789a-1"},
		{"req_0123456789ab-1", "", "req_0123456789ab-1"},
		{"req_0123456789ab1zzzzzzzzzzzzzzz", "", "req_0123456789ab1zzzzzzzzzzzzzzz"}, // past 2^64
		{"bAbC12-01-0", "", "bAbC12-01-0"},
		{"bAbC12-1-00", "", "bAbC12-1-00"},
		{"bAbC12-1-+1", "", "bAbC12-1-+1"},
		{"b-1-0", "", "b-1-0"},
		{"bAbC12-1", "", "bAbC12-1"},
		{"bAbC12--1", "", "bAbC12--1"},
		{"b", "", "b"},
		{"r1", "", "r1"},
		{"", "", ""},
	} {
		if shard, field := idSlot(c.id); shard != c.shard || field != c.field {
			t.Errorf("idSlot(%q) = %q, %q; want %q, %q", c.id, shard, field, c.shard, c.field)
		}
	}
}

// TestRedisShardsIDs, on one Redis and on a cluster: records with the
// gateway's and the batches' ids count once however often they are
// applied; their ids sit in shards of at most 128 under the team's hash
// tag, in Redis's compact encoding, expiring with the day's ids; other
// spellings count once in the day's hash; and an id an earlier version put
// in the day's hash is not counted again.
func TestRedisShardsIDs(t *testing.T) {
	for name, client := range redisClients() {
		t.Run(name, func(t *testing.T) {
			c := client(t)
			ctx := context.Background()
			s := NewRedis(c, &config.Redis{KeyPrefix: "ng:"}, Options{})
			p := NewPricer(testConfig())
			at := time.Now().UTC()
			var recs []Record
			for n := range 300 {
				recs = append(recs, served(p, "req_0123456789ab"+strconv.FormatUint(uint64(n), 36), at, "k", "design", "laozhang", 1, 1, 0, 0))
			}
			for line := range 200 {
				for try := range 2 {
					recs = append(recs, served(p, "bXy9-"+strconv.Itoa(line)+"-"+strconv.Itoa(try), at, "k", "design", "google", 1, 1, 0, 0))
				}
			}
			odd := []string{"req_0123456789ab01", "req_0123456789AB1", "bXy9-01-0", "bXy9-1-00", "plain"}
			for _, id := range odd {
				recs = append(recs, served(p, id, at, "k", "design", "google", 1, 1, 0, 0))
			}
			// In batches of 64, each with a record already applied.
			for i := 0; i < len(recs); i += 64 {
				batch := recs[i:min(i+64, len(recs))]
				if i > 0 {
					batch = append([]Record{recs[i-1]}, batch...)
				}
				if n, err := s.ApplyBatch(ctx, batch); err != nil || n != min(64, len(recs)-i) {
					t.Fatalf("batch at %d = %d, %v; want %d", i, n, err, min(64, len(recs)-i))
				}
			}
			if n, err := s.ApplyBatch(ctx, recs); err != nil || n != 0 {
				t.Fatalf("all of them again = %d, %v; want 0", n, err)
			}
			for _, per := range []string{Day(at), Month(at), PeriodTotal} {
				checkBucket(t, s, recs, "design", per)
			}

			ids := "{ng:design}:acct:ids:" + Day(at)
			wantTTL := time.Until(at.Truncate(24 * time.Hour).Add(24*time.Hour + DefaultIDWindow))
			shards := map[string]int64{}
			var (
				mu   sync.Mutex // ForEachMaster calls scan concurrently
				keys []string
			)
			scan := func(ctx context.Context, c *redis.Client) error {
				ks, err := c.Keys(ctx, ids+":*").Result()
				mu.Lock()
				keys = append(keys, ks...)
				mu.Unlock()
				return err
			}
			if cc, ok := c.(*redis.ClusterClient); ok {
				if err := cc.ForEachMaster(ctx, scan); err != nil {
					t.Fatal(err)
				}
			} else if err := scan(ctx, c.(*redis.Client)); err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				n, err := c.HLen(ctx, k).Result()
				if err != nil {
					t.Fatal(err)
				}
				shards[strings.TrimPrefix(k, ids+":")] = n
				if n > 128 {
					t.Errorf("%s holds %d ids", k, n)
				}
				if enc, _ := c.ObjectEncoding(ctx, k).Result(); enc != "listpack" && enc != "ziplist" {
					t.Errorf("%s is a %s, want a listpack", k, enc)
				}
				if ttl, _ := c.TTL(ctx, k).Result(); ttl < wantTTL-time.Minute || ttl > wantTTL+time.Minute {
					t.Errorf("%s expires in %v, want about %v", k, ttl, wantTTL)
				}
			}
			want := map[string]int64{"r0123456789ab:0": 128, "r0123456789ab:1": 128, "r0123456789ab:2": 44,
				"bXy9:0:0": 128, "bXy9:1:0": 72, "bXy9:0:1": 128, "bXy9:1:1": 72}
			if len(shards) != len(want) {
				t.Errorf("shards %v, want %v", shards, want)
			}
			for k, n := range want {
				if shards[k] != n {
					t.Errorf("shard %s holds %d ids, want %d", k, shards[k], n)
				}
			}
			plain, err := c.HKeys(ctx, ids).Result()
			if err != nil || len(plain) != len(odd) {
				t.Errorf("the day's hash holds %v, %v; want %v", plain, err, odd)
			}

			// An earlier version kept every id in the day's hash.
			legacy := "req_0123456789ab" + strconv.FormatUint(5000, 36)
			c.HSet(ctx, ids, legacy, "1")
			again := served(p, legacy, at, "k", "design", "google", 1, 1, 0, 0)
			if n, err := s.ApplyBatch(ctx, []Record{again, recs[0]}); err != nil || n != 0 {
				t.Errorf("ids applied by an earlier version = %d, %v; want 0", n, err)
			}
			fresh := served(p, "req_0123456789ab"+strconv.FormatUint(5001, 36), at, "k", "design", "google", 1, 1, 0, 0)
			if n, err := s.ApplyBatch(ctx, []Record{fresh, again}); err != nil || n != 1 {
				t.Errorf("a new id beside an old one = %d, %v; want 1", n, err)
			}
			checkBucket(t, s, append(recs, fresh), "design", PeriodTotal)
		})
	}
}

// FuzzIDSlotIsInjective: two different ids never share a shard and field,
// so that one cannot stand for the other as applied. The seeds are the
// spellings that come closest.
func FuzzIDSlotIsInjective(f *testing.F) {
	for _, s := range [][2]string{
		{"req_0123456789ab1", "req_0123456789ab01"},
		{"req_0123456789ab3k", "req_0123456789ab0"},
		{"bx-1-0", "bx-129-0"},
		{"bx-1-0", "bx-1-00"},
		{"ba-b-7-1", "ba-b-7-1-0"},
		{"ba:0-1-0", "ba-1-0"},
		{"req_0123456789ab1", "b0123456789ab-1-0"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if a == b {
			return
		}
		sa, fa := idSlot(a)
		sb, fb := idSlot(b)
		if sa != "" && sa == sb && fa == fb {
			t.Fatalf("%q and %q share shard %q, field %q", a, b, sa, fa)
		}
	})
}
