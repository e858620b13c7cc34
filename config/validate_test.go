package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// baseYAML is a small valid config the Validate cases each break once.
const baseYAML = `server: { listen: "127.0.0.1:8080" }
providers:
  - name: laozhang
    kind: openai
    base_url: https://api.laozhang.ai/v1
    api_key: sk-lz
    models: { m1: up-m1 }
    price: { per_image: 0.035 }
  - name: google
    kind: gemini
    base_url: https://generativelanguage.googleapis.com/v1beta
    api_key: ${GEMINI_API_KEY}
    models: { m1: g1, m2: g2 }
teams:
  - name: design
    budget: { usd: 500 }
  - name: ops
keys:
  - name: ci
    team: design
    key: secret-ci-0123456789
    models: [m1]
  - name: other
    key_sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
`

func baseConfig(t *testing.T) *Config {
	t.Helper()
	cfg, _ := mustParse(t, baseYAML, map[string]string{"GEMINI_API_KEY": "AIza"})
	return cfg
}

func validRedis() *Redis {
	r := &Redis{Addrs: []string{"127.0.0.1:6379"}}
	c := Config{Redis: r}
	c.Defaults()
	return r
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestValidateRules(t *testing.T) {
	if err := baseConfig(t).Validate(); err != nil {
		t.Fatalf("base config: %v", err)
	}
	yes := true
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   []string // "path: message fragment", one per expected problem
	}{
		{"listen empty", func(c *Config) { c.Server.Listen = "" }, []string{"server.listen: required"}},
		{"listen without port", func(c *Config) { c.Server.Listen = "localhost" }, []string{`server.listen: want host:port, got "localhost"`}},
		{"listen port out of range", func(c *Config) { c.Server.Listen = "h:99999" }, []string{"server.listen: want host:port"}},
		{"listen on any host is fine", func(c *Config) { c.Server.Listen = ":0" }, nil},
		{"public_url scheme", func(c *Config) { c.Server.PublicURL = "ftp://x" }, []string{"server.public_url: want an absolute"}},
		{"public_url relative", func(c *Config) { c.Server.PublicURL = "/images" }, []string{"server.public_url: want an absolute"}},
		{"max_body_bytes", func(c *Config) { c.Server.MaxBodyBytes = -1 }, []string{"server.max_body_bytes: must be at least 1"}},
		{"read_timeout", func(c *Config) { c.Server.ReadTimeout = -time.Second }, []string{"server.read_timeout: must not be negative"}},
		{"write_timeout zero is valid", func(c *Config) { c.Server.WriteTimeout = 0 }, nil},
		{"write_timeout negative", func(c *Config) { c.Server.WriteTimeout = -time.Second }, []string{"server.write_timeout: must not be negative"}},
		{"concurrency", func(c *Config) { c.Server.Concurrency = -1 }, []string{"server.concurrency: must not be negative"}},
		{"log level", func(c *Config) { c.Log.Level = "verbose" }, []string{`log.level: "verbose" is not one of debug, info, warn, error`}},
		{"log format", func(c *Config) { c.Log.Format = "text" }, []string{`log.format: "text" is not one of json, console`}},

		{"redis valid", func(c *Config) { c.Redis = validRedis() }, nil},
		{"redis cluster valid", func(c *Config) { c.Redis = validRedis(); c.Redis.Addrs = []string{"a:1", "b:2", "[::1]:3"} }, nil},
		{"redis no addrs", func(c *Config) { c.Redis = validRedis(); c.Redis.Addrs = nil }, []string{"redis.addrs: at least one address"}},
		{"redis addr without host", func(c *Config) { c.Redis = validRedis(); c.Redis.Addrs = []string{"a:1", ":6379"} }, []string{"redis.addrs[1]: want host:port"}},
		{"redis on_outage", func(c *Config) { c.Redis = validRedis(); c.Redis.OnOutage = "maybe" }, []string{"redis.on_outage: \"maybe\" is not one of open, closed"}},
		{"redis db", func(c *Config) { c.Redis = validRedis(); c.Redis.DB = -1 }, []string{"redis.db: must not be negative"}},
		{"redis decision_timeout", func(c *Config) { c.Redis = validRedis(); c.Redis.DecisionTimeout = 0 }, []string{"redis.decision_timeout: must be a positive duration"}},

		{"no providers", func(c *Config) { c.Providers = nil; c.Keys[0].Models = nil }, []string{"providers: at least one provider is required"}},
		{"provider name empty", func(c *Config) { c.Providers[1].Name = "" }, []string{"providers[1].name: required"}},
		{"provider name duplicate", func(c *Config) { c.Providers[1].Name = "laozhang" }, []string{`providers[1].name: duplicate provider name "laozhang" (also providers[0])`}},
		{"provider kind", func(c *Config) { c.Providers[0].Kind = "anthropic" }, []string{`providers[0].kind: "anthropic" is not one of openai, gemini`}},
		{"provider base_url without scheme", func(c *Config) { c.Providers[0].BaseURL = "api.laozhang.ai/v1" }, []string{"providers[0].base_url: want an absolute"}},
		{"provider base_url empty", func(c *Config) { c.Providers[0].BaseURL = "" }, []string{"providers[0].base_url: want an absolute"}},
		{"provider no models", func(c *Config) { c.Providers[1].Models = nil }, []string{"providers[1].models: at least one model mapping"}},
		{"provider empty public name", func(c *Config) { c.Providers[1].Models[""] = "x" }, []string{"providers[1].models: empty public model name"}},
		{"provider empty upstream name", func(c *Config) { c.Providers[1].Models["m2"] = "" }, []string{"providers[1].models.m2: empty provider model name"}},
		{"provider negative price", func(c *Config) { c.Providers[0].Price.PerImage = -0.01 }, []string{"providers[0].price.per_image: must be a number from 0 to"}},
		{"provider NaN price", func(c *Config) { c.Providers[0].Price.InputPerMTok = math.NaN() }, []string{"providers[0].price.input_per_mtok: must be a number from 0 to"}},
		{"provider infinite price", func(c *Config) { c.Providers[0].Price.OutputPerMTok = math.Inf(1) }, []string{"providers[0].price.output_per_mtok: must be a number from 0 to"}},
		{"provider timeout", func(c *Config) { c.Providers[0].Timeout = -time.Second }, []string{"providers[0].timeout: must be a positive duration"}},
		{"provider max_conns", func(c *Config) { c.Providers[0].MaxConns = -1 }, []string{"providers[0].max_conns: must be at least 1"}},

		{"routing strategy", func(c *Config) { c.Routing.Strategy = "random" }, []string{`routing.strategy: "random" is not one of cheapest, latency`}},
		{"routing latency is fine", func(c *Config) { c.Routing.Strategy = "latency" }, nil},
		{"max_attempts", func(c *Config) { c.Routing.MaxAttempts = 0 }, []string{"routing.max_attempts: must be at least 1"}},
		{"failure_threshold", func(c *Config) { c.Routing.Health.FailureThreshold = 0 }, []string{"routing.health.failure_threshold: must be at least 1"}},
		{"cooldown", func(c *Config) { c.Routing.Health.Cooldown = 0 }, []string{"routing.health.cooldown: must be a positive duration"}},
		{"max_retry_after", func(c *Config) { c.Routing.Health.MaxRetryAfter = -time.Second }, []string{"routing.health.max_retry_after: must be a positive duration"}},
		{"fetch timeout", func(c *Config) { c.Images.Fetch.Timeout = -time.Second }, []string{"images.fetch.timeout: must be a positive duration"}},
		{"fetch max_per_request", func(c *Config) { c.Images.Fetch.MaxPerRequest = 17 }, []string{"images.fetch.max_per_request: must be from 1 to 16"}},
		{"fetch max_bytes_in_flight", func(c *Config) { c.Images.Fetch.MaxBytesInFlight = 1 << 20 }, []string{"images.fetch.max_bytes_in_flight: must be at least 20971520"}},
		{"tokens_per_image", func(c *Config) { c.Billing.TokensPerImage = 0 }, []string{"billing.tokens_per_image: must be an integer from 1 to"}},
		{"tokens_per_image huge", func(c *Config) { c.Billing.TokensPerImage = 1 << 40 }, []string{"billing.tokens_per_image: must be an integer from 1 to"}},
		{"provider price beyond the bound", func(c *Config) { c.Providers[0].Price.OutputPerMTok = 1e300 }, []string{"providers[0].price.output_per_mtok: must be a number from 0 to"}},

		{"images format", func(c *Config) { c.Images.Format = "url" }, []string{`images.format: "url" is not one of markdown, data_url, images`}},
		{"offload store", func(c *Config) { c.Images.Offload.Store = "gcs" }, []string{`images.offload.store: "gcs" is not one of filesystem, s3`}},
		{"offload ttl", func(c *Config) { c.Images.Offload.TTL = 0 }, []string{"images.offload.ttl: must be a positive duration"}},
		{"offload enabled without signing key", func(c *Config) { c.Images.Offload.Enabled = true },
			[]string{"images.offload.signing_key: must be at least 32 bytes when images.offload.enabled is true"}},
		{"offload enabled with short signing key", func(c *Config) {
			c.Images.Offload.Enabled = true
			c.Images.Offload.SigningKey = strings.Repeat("k", 31)
		}, []string{"images.offload.signing_key: must be at least 32 bytes"}},
		{"offload enabled without dir", func(c *Config) {
			c.Images.Offload.Enabled = true
			c.Images.Offload.SigningKey = strings.Repeat("k", 32)
			c.Images.Offload.Dir = ""
		}, []string{"images.offload.dir: is required when images.offload.enabled is true"}},
		{"offload enabled, filesystem ok", func(c *Config) {
			c.Images.Offload.Enabled = true
			c.Images.Offload.SigningKey = strings.Repeat("k", 32)
		}, nil},
		{"offload s3 without endpoint and bucket", func(c *Config) {
			c.Images.Offload.Enabled = true
			c.Images.Offload.Store = "s3"
		}, []string{"images.offload.s3.endpoint: is required", "images.offload.s3.bucket: is required"}},
		{"offload s3 ok", func(c *Config) {
			c.Images.Offload.Enabled = true
			c.Images.Offload.Store = "s3"
			c.Images.Offload.S3 = S3{Endpoint: "s3.amazonaws.com", Bucket: "b"}
		}, nil},
		{"offload off: store settings not required", func(c *Config) { c.Images.Offload.Dir = "" }, nil},
		{"key offload_images is a warning, not a problem", func(c *Config) { c.Keys[0].OffloadImages = &yes }, nil},

		{"batch workers", func(c *Config) { c.Batch.Workers = 0 }, []string{"batch.workers: must be at least 1"}},
		{"batch max_share zero", func(c *Config) { c.Batch.MaxShare = 0 }, []string{"batch.max_share: must be greater than 0 and at most 1"}},
		{"batch max_share above one", func(c *Config) { c.Batch.MaxShare = 1.5 }, []string{"batch.max_share: must be greater than 0 and at most 1"}},
		{"batch max_share one", func(c *Config) { c.Batch.MaxShare = 1 }, nil},
		{"batch reclaim_after", func(c *Config) { c.Batch.ReclaimAfter = 0 }, []string{"batch.reclaim_after: must be a positive duration"}},
		{"batch retention", func(c *Config) { c.Batch.Retention = -time.Hour }, []string{"batch.retention: must be a positive duration"}},
		{"files quotas", func(c *Config) { c.Files.MaxBytesPerTeam, c.Files.MaxFilesPerTeam = -1, -1 },
			[]string{"files.max_bytes_per_team: must be at least 1", "files.max_files_per_team: must be at least 1"}},
		{"files default_ttl", func(c *Config) { c.Files.DefaultTTL = -time.Second }, []string{"files.default_ttl: must be a positive duration"}},

		{"team name empty", func(c *Config) { c.Teams[1].Name = "" }, []string{"teams[1].name: required"}},
		{"team name duplicate", func(c *Config) { c.Teams[1].Name = "design" }, []string{`teams[1].name: duplicate team name "design" (also teams[0])`}},
		{"team rpm", func(c *Config) { c.Teams[0].RPM = -1 }, []string{"teams[0].rpm: must not be negative"}},
		{"team tpm", func(c *Config) { c.Teams[0].TPM = -1 }, []string{"teams[0].tpm: must not be negative"}},
		{"team budget usd", func(c *Config) { c.Teams[0].Budget.USD = 0 }, []string{"teams[0].budget.usd: must be a positive number"}},
		{"team budget beyond the bound", func(c *Config) { c.Teams[0].Budget.USD = 1e19 }, []string{"teams[0].budget.usd: must be a positive number up to"}},
		{"team budget period", func(c *Config) { c.Teams[0].Budget.Period = "weekly" }, []string{`teams[0].budget.period: "weekly" is not one of daily, monthly, total`}},

		{"key name empty", func(c *Config) { c.Keys[1].Name = "" }, []string{"keys[1].name: required"}},
		{"key name duplicate", func(c *Config) { c.Keys[1].Name = "ci" }, []string{`keys[1].name: duplicate key name "ci" (also keys[0])`}},
		{"key and key_sha256", func(c *Config) { c.Keys[1].Key = "another-secret-0123" }, []string{"keys[1]: set only one of key and key_sha256"}},
		{"neither key nor key_sha256", func(c *Config) { c.Keys[1].KeySHA256 = "" }, []string{"keys[1]: one of key or key_sha256 is required"}},
		{"key_sha256 short", func(c *Config) { c.Keys[1].KeySHA256 = "abc" }, []string{"keys[1].key_sha256: want 64 hex digits"}},
		{"key_sha256 not hex", func(c *Config) { c.Keys[1].KeySHA256 = strings.Repeat("g", 64) }, []string{"keys[1].key_sha256: want 64 hex digits"}},
		{"key team unknown", func(c *Config) { c.Keys[0].Team = "nope" }, []string{`keys[0].team: no team named "nope"`}},
		{"key without team", func(c *Config) { c.Keys[0].Team = "" }, nil},
		{"key rpm", func(c *Config) { c.Keys[0].RPM = -1 }, []string{"keys[0].rpm: must not be negative"}},
		{"key tpm", func(c *Config) { c.Keys[0].TPM = -1 }, []string{"keys[0].tpm: must not be negative"}},
		{"key model unknown", func(c *Config) { c.Keys[0].Models = []string{"m1", "dall-e-3"} }, []string{`keys[0].models[1]: no provider maps model "dall-e-3"`}},
		{"key model of a disabled provider", func(c *Config) { c.Providers[1].Disabled = true; c.Keys[0].Models = []string{"m2"} }, nil},
		{"key webhook_url", func(c *Config) { c.Keys[0].WebhookURL = "example.com/hook" }, []string{"keys[0].webhook_url: want an absolute"}},
		{"key webhook_url ok", func(c *Config) { c.Keys[0].WebhookURL = "https://example.com/hook" }, nil},
		{"same key twice", func(c *Config) { c.Keys[1].KeySHA256 = ""; c.Keys[1].Key = "secret-ci-0123456789" },
			[]string{`keys[1]: key "other" has the same secret as keys[0] ("ci")`}},
		{"same key as key and as key_sha256", func(c *Config) { c.Keys[1].KeySHA256 = sha("secret-ci-0123456789") },
			[]string{`keys[1]: key "other" has the same secret as keys[0] ("ci")`}},
		{"same key_sha256 in another case", func(c *Config) {
			c.Keys = append(c.Keys, Key{Name: "third", KeySHA256: strings.ToUpper(c.Keys[1].KeySHA256)})
		}, []string{`keys[2]: key "third" has the same secret as keys[1] ("other")`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := baseConfig(t)
			tc.mutate(c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected problems:\n%v", err)
				}
				return
			}
			var ps *Problems
			if !errors.As(err, &ps) {
				t.Fatalf("Validate = %v, want *Problems", err)
			}
			if len(*ps) != len(tc.want) {
				t.Errorf("%d problems, want %d:\n%v", len(*ps), len(tc.want), err)
			}
			for _, w := range tc.want {
				found := false
				for _, p := range *ps {
					found = found || strings.Contains(p.Path+": "+p.Msg, w)
				}
				if !found {
					t.Errorf("no problem %q in:\n%v", w, err)
				}
			}
		})
	}
}

func TestValidateProblemsCarryFileAndLine(t *testing.T) {
	yml := `providers:
  - name: a
    kind: openai
    base_url: https://a.example
    api_key: k
    models: {m: m}
    price: {per_image: 0.01}
  - name: b
    kind: gemini
    base_url: not-a-url
    api_key: k
    models: {m: m}
keys:
  - name: k1
    key: ${K1}
    team: ghost
  - name: k2
    models: [m, nope]
`
	got := problems(t, yml, nil).Error()
	want := strings.Join([]string{
		"cfg.yaml:10: providers[1].base_url: want an absolute http:// or https:// URL",
		`cfg.yaml:15: keys[0].key: ${K1} is not set (write ${K1:-} to allow it unset, or ${K1:-default})`,
		`cfg.yaml:16: keys[0].team: no team named "ghost"`,
		"cfg.yaml:17: keys[1]: one of key or key_sha256 is required",
		`cfg.yaml:18: keys[1].models[1]: no provider maps model "nope"`,
	}, "\n")
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestProblemsNeverShowSecrets(t *testing.T) {
	secrets := map[string]string{
		"ADMIN":   "ADMIN-SECRET-1111",
		"REDIS":   "REDIS-SECRET-2222",
		"LZ":      "PROVIDER-SECRET-3333",
		"SIGN":    "SIGN-SECRET-4444",
		"S3":      "S3-SECRET-5555",
		"KEY":     "KEY-SECRET-6666",
		"BADHASH": "HASH-SECRET-7777",
	}
	yml := `admin_key: ${ADMIN}
redis:
  addrs: [":1"]
  password: ${REDIS}
  on_outage: ajar
providers:
  - name: laozhang
    kind: opneai
    base_url: "https://user:${LZ}@api.example/v1?key=${LZ}x"
    api_key: ${LZ}
    models: {m: m}
    price: {per_image: -1}
  - name: laozhang
    kind: gemini
    base_url: "://${LZ}"
    api_key: "${LZ}"
    models: {m: ""}
images:
  offload:
    enabled: true
    store: filesystem
    signing_key: ${SIGN}
    s3: {secret_key: "${S3}"}
keys:
  - name: a
    key: ${KEY}
    webhook_url: "${KEY}"
  - name: b
    key: ${KEY}
  - name: c
    key: ${KEY}
    key_sha256: ${BADHASH}
  - name: d
    key_sha256: ${BADHASH}
`
	ps := problems(t, yml, secrets)
	if len(ps) < 10 {
		t.Fatalf("expected many problems, got:\n%v", ps)
	}
	out := ps.Error()
	for name, s := range secrets {
		if strings.Contains(out, s) || strings.Contains(out, s[:7]) {
			t.Errorf("secret %s shows in problems:\n%s", name, out)
		}
	}

	// Decoding problems next to secrets do not quote them either.
	yml = `admin_key: [ADMIN-SECRET-1111]
providers:
  - api_key: {a: PROVIDER-SECRET-3333}
    base_url: "${LZ"
    name: PROVIDER-SECRET-3333x
    name: y
keys:
  - key: "KEY-${SECRET-6666"
`
	out = problems(t, yml, nil).Error()
	for _, s := range []string{"ADMIN-SECRET", "PROVIDER-SECRET", "SECRET-6666"} {
		if strings.Contains(out, s) {
			t.Errorf("%s shows in problems:\n%s", s, out)
		}
	}
}

func TestProblemFormat(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{File: "c.yaml", Line: 3, Path: "a.b", Msg: "bad"}, "c.yaml:3: a.b: bad"},
		{Problem{File: "c.yaml", Path: "a.b", Msg: "bad"}, "c.yaml: a.b: bad"},
		{Problem{Line: 3, Path: "a.b", Msg: "bad"}, "line 3: a.b: bad"},
		{Problem{Path: "a.b", Msg: "bad"}, "a.b: bad"},
		{Problem{File: "c.yaml", Line: 3, Msg: "bad"}, "c.yaml:3: bad"},
		{Problem{Msg: "bad"}, "bad"},
	}
	for _, tc := range tests {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.p, got, tc.want)
		}
	}
	ps := Problems{tests[0].p, tests[3].p}
	if got, want := ps.Error(), "c.yaml:3: a.b: bad\na.b: bad"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}

	// Validate's error can be taken as either *Problems or Problems.
	err := (&Config{}).Validate()
	var pp *Problems
	var pv Problems
	if !errors.As(err, &pp) || !errors.As(err, &pv) || len(pv) != len(*pp) || len(pv) == 0 {
		t.Errorf("errors.As failed: %v %v", pp, pv)
	}
}

func TestShortSecretsNamedWithTheirLine(t *testing.T) {
	yml := `admin_key: ${ADMIN}
providers: [{ name: p, kind: gemini, base_url: "https://g.example", api_key: k, models: { m: m } }]
keys:
  - name: long
    key: 0123456789abcdef
  - name: short
    key: 0123456789abcde
  - name: hashed
    key_sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
`
	got := lines(problems(t, yml, map[string]string{"ADMIN": strings.Repeat("a", 23)}))
	want := []string{
		"cfg.yaml:1: admin_key: must be at least 24 characters (it has 23)",
		`cfg.yaml:7: keys[1].key: key "short" must be at least 16 characters (it has 15)`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, admin := range []string{strings.Repeat("a", 24), ""} {
		fixed := strings.Replace(yml, "key: 0123456789abcde\n", "key: 0123456789abcdeX\n", 1)
		if _, _, err := Parse([]byte(fixed), "cfg.yaml", env(map[string]string{"ADMIN": admin})); err != nil {
			t.Errorf("admin key of %d characters: %v", len(admin), err)
		}
	}
}
