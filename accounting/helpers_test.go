package accounting

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"nanogate/config"
	"nanogate/internal/poll"
	"nanogate/internal/redistest"
)

// clock is an injectable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testConfig is the example config's providers: the reseller at $0.035 and
// Google at $0.039 per image, both at $0.30 / $2.50 per million tokens.
func testConfig() *config.Config {
	return &config.Config{
		Providers: []config.Provider{
			{Name: "laozhang", Kind: "openai",
				Models: map[string]string{"gemini-2.5-flash-image-preview": "gemini-2.5-flash-image-preview"},
				Price:  config.Price{PerImage: 0.035, InputPerMTok: 0.30, OutputPerMTok: 2.50}},
			{Name: "google", Kind: "gemini",
				Models: map[string]string{"gemini-2.5-flash-image-preview": "gemini-2.5-flash-image",
					"gemini-2.5-flash-image": "gemini-2.5-flash-image"},
				Price: config.Price{PerImage: 0.039, InputPerMTok: 0.30, OutputPerMTok: 2.50}},
		},
		Billing: config.Billing{TokensPerImage: 1290},
	}
}

const previewModel = "gemini-2.5-flash-image-preview"

// served builds a record as the gateway does: usage of the serving
// provider, 1290 tokens per image, priced by the Pricer.
func served(p *Pricer, id string, at time.Time, key, team, provider string, attempts int, images, prompt, text int64) Record {
	r := Record{ID: id, Time: at, Key: key, Team: team, Model: previewModel, Provider: provider,
		Attempts: attempts, Images: images, PromptTokens: prompt, TextTokens: text, ImageTokens: 1290 * images,
		Status: 200}
	p.Charge(&r)
	return r
}

// failedRecord is a request every provider failed.
func failedRecord(id string, at time.Time, key, team string, attempts int) Record {
	return Record{ID: id, Time: at, Key: key, Team: team, Model: previewModel, Attempts: attempts, Status: 502}
}

// backend makes a fresh, empty store for one test, on the given clock.
type backend func(t *testing.T, clk *clock) Store

var namespace atomic.Int64

func redisBackend(c redis.UniversalClient) backend {
	return func(t *testing.T, clk *clock) Store {
		prefix := fmt.Sprintf("t%d:", namespace.Add(1))
		return NewRedis(c, &config.Redis{KeyPrefix: prefix}, Options{Now: clk.Now})
	}
}

func memoryBackend(t *testing.T, clk *clock) Store {
	m, err := OpenMemory(filepath.Join(t.TempDir(), "usage.jsonl"), Options{Now: clk.Now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func newClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1})
	t.Cleanup(func() { c.Close() })
	return c
}

// startCluster starts a 3-node Redis Cluster (masters only) and returns a
// cluster client over it.
func startCluster(t *testing.T) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: redistest.Addrs(redistest.StartCluster(t)),
		ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { cc.Close() })
	return cc
}

// totals reads one team's bucket of one period.
func read(t *testing.T, s Store, team, period string) *Bucket {
	t.Helper()
	bs, err := s.Read(context.Background(), team, []string{period})
	if err != nil {
		t.Fatal(err)
	}
	return bs[0]
}

func mustApply(t *testing.T, s Store, recs ...Record) {
	t.Helper()
	for _, r := range recs {
		if _, err := s.Apply(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
}

// waitFor polls cond until it holds or 20s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 20*time.Second, what, cond)
}

type dim struct {
	kind byte // 'k' key, 'm' model, 'p' provider, 's' model at a size (SizeKey)
	name string
}

// dims are the key, model and provider totals a record touches besides its
// team's, as the stores should count them: a failed record has no
// provider, nor a size.
func (r *Record) dims() []dim {
	d := []dim{{'k', r.Key}, {'m', r.Model}}
	if r.Provider != "" {
		d = append(d, dim{'p', r.Provider})
	}
	if r.Size != "" && !r.Failed() {
		d = append(d, dim{'s', SizeKey(r.Model, r.Size)})
	}
	return d
}

// redisClients are the two shapes of Redis a test of the scripts runs on:
// one server, and a 3-node cluster (where every key of a script must share
// a hash slot).
func redisClients() map[string]func(t *testing.T) redis.UniversalClient {
	return map[string]func(t *testing.T) redis.UniversalClient{
		"SingleNode": func(t *testing.T) redis.UniversalClient { return newClient(t, redistest.Start(t).Addr) },
		"Cluster":    func(t *testing.T) redis.UniversalClient { return startCluster(t) },
	}
}

// advance moves the fake clock of the calling goroutine's synctest bubble.
func advance(d time.Duration) { time.Sleep(d) }
