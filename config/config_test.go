package config

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// env is a fake getenv over m.
func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

var fullEnv = map[string]string{
	"NANOGATE_ADMIN_KEY": "admin-secret-0123456789abcdef",
	"LAOZHANG_API_KEY":   "sk-laozhang",
	"GEMINI_API_KEY":     "AIza-gemini",
	"DESIGN_CI_KEY":      "sk-design-ci-0123456789",
}

// withClientKey appends a client key to yml when it has none: every
// config needs one, and most tests are about something else.
func withClientKey(yml string) string {
	if strings.Contains(yml, "keys:") {
		return yml
	}
	return yml + "\nkeys: [{ name: test-client, key: test-client-key-0123 }]\n"
}

func mustParse(t *testing.T, yml string, m map[string]string) (*Config, []string) {
	t.Helper()
	cfg, warns, err := Parse([]byte(withClientKey(yml)), "cfg.yaml", env(m))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg, warns
}

func TestParseFullSpecConfig(t *testing.T) {
	data, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, warns, err := Parse(data, "testdata/full.yaml", env(fullEnv))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	// The full example turns offload on for one key while offload has no
	// signing key: served, but with a warning.
	storeWarn := "testdata/full.yaml:43: the filesystem image store is per replica while Redis shares everything " +
		"else: with several replicas, make images.offload.dir a volume every replica mounts (ReadWriteMany) or use the s3 " +
		"store, or a link one replica issued is not found on another"
	wantWarns := []string{storeWarn, "testdata/full.yaml:64: key design-ci: offload_images is true but " +
		"images.offload.signing_key must be at least 32 bytes; its images cannot be offloaded"}
	if !slices.Equal(warns, wantWarns) {
		t.Errorf("warnings:\n%q\nwant\n%q", warns, wantWarns)
	}
	withKey := maps.Clone(fullEnv)
	withKey["NANOGATE_SIGNING_KEY"] = strings.Repeat("k", 32)
	if _, warns, err := Parse(data, "testdata/full.yaml", env(withKey)); err != nil || !slices.Equal(warns, []string{storeWarn}) {
		t.Errorf("with a signing key: warnings %q, error %v", warns, err)
	}
	tru := true
	want := &Config{
		Server: Server{
			Listen: "127.0.0.1:8080", PublicURL: "http://127.0.0.1:8080", MaxBodyBytes: 32 << 20,
			ShutdownTimeout: 30 * time.Second, ReadTimeout: 60 * time.Second, WriteTimeout: 60 * time.Second,
			IdleTimeout: 120 * time.Second, MaxHeaderBytes: 16384,
		},
		AdminKey: "admin-secret-0123456789abcdef",
		Log:      Log{Level: "info", Format: "json"},
		Redis: &Redis{
			Addrs: []string{"127.0.0.1:6379"}, Password: "", DB: 0, KeyPrefix: "nanogate:", OnOutage: "open",
			DialTimeout: 200 * time.Millisecond, ReadTimeout: 100 * time.Millisecond,
			WriteTimeout: 100 * time.Millisecond, DecisionTimeout: 50 * time.Millisecond,
		},
		Providers: []Provider{
			{
				Name: "laozhang", Kind: "openai", BaseURL: "https://api.laozhang.ai/v1", APIKey: "sk-laozhang",
				Models:  map[string]string{"gemini-2.5-flash-image-preview": "gemini-2.5-flash-image-preview"},
				Price:   Price{PerImage: 0.035, InputPerMTok: 0.30, OutputPerMTok: 2.50},
				Timeout: 120 * time.Second, MaxConns: 512,
			},
			{
				Name: "google", Kind: "gemini", BaseURL: "https://generativelanguage.googleapis.com/v1beta", APIKey: "AIza-gemini",
				Models: map[string]string{
					"gemini-2.5-flash-image-preview": "gemini-2.5-flash-image",
					"gemini-2.5-flash-image":         "gemini-2.5-flash-image",
				},
				Price:   Price{PerImage: 0.039, InputPerMTok: 0.30, OutputPerMTok: 2.50},
				Timeout: 120 * time.Second, MaxConns: 512,
			},
		},
		Routing: Routing{Strategy: "cheapest", MaxAttempts: 3, Health: Health{FailureThreshold: 3, Cooldown: 30 * time.Second, MaxRetryAfter: 60 * time.Second}},
		Billing: Billing{TokensPerImage: 1290},
		Images: Images{Format: "markdown", Offload: Offload{
			Enabled: false, Store: "filesystem", Dir: "./data/images", TTL: 24 * time.Hour, SigningKey: "",
			S3: S3{UseSSL: true},
		}, Fetch: ImageFetch{Timeout: 15 * time.Second, MaxPerRequest: 4, MaxBytesInFlight: 128 << 20}},
		Batch: Batch{Workers: 8, MaxShare: 0.5, ReclaimAfter: 60 * time.Second, Retention: 720 * time.Hour},
		Files: Files{MaxBytesPerTeam: 1 << 30, MaxFilesPerTeam: 10000, DefaultTTL: 720 * time.Hour},
		Teams: []Team{{Name: "design", RPM: 600, TPM: 2000000, Budget: &Budget{USD: 500, Period: "monthly"}}},
		Keys: []Key{{
			Name: "design-ci", Team: "design", Key: "sk-design-ci-0123456789", RPM: 60, TPM: 200000,
			Models: []string{"gemini-2.5-flash-image-preview"}, OffloadImages: &tru, WebhookURL: "",
		}},
		DataDir: "./data",
		Path:    "testdata/full.yaml",
	}
	got := *cfg
	got.lines, got.models, got.byPublic = nil, nil, nil
	if !reflect.DeepEqual(&got, want) {
		t.Errorf("config mismatch:\n got  %+v\n want %+v", got, *want)
	}
	if l := cfg.line("providers[1].base_url"); l != 24 {
		t.Errorf("line of providers[1].base_url = %d, want 24", l)
	}
	if got, want := cfg.PublicModels(), []string{"gemini-2.5-flash-image", "gemini-2.5-flash-image-preview"}; !slices.Equal(got, want) {
		t.Errorf("PublicModels = %q, want %q", got, want)
	}
}

func TestDefaultsOfMinimalConfig(t *testing.T) {
	cfg, _ := mustParse(t, `
server: { listen: "0.0.0.0:9000" }
providers:
  - { name: p, kind: gemini, base_url: "https://g.example/v1beta/", api_key: k, models: { m: m } }
teams: [{ name: t, budget: { usd: 5 } }]
keys: [{ name: k, key_sha256: "ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789" }]
`, nil)
	checks := []struct {
		name      string
		got, want any
	}{
		{"public_url from wildcard listen", cfg.Server.PublicURL, "http://localhost:9000"},
		{"base_url trailing slash trimmed", cfg.Providers[0].BaseURL, "https://g.example/v1beta"},
		{"redis absent", cfg.Redis, (*Redis)(nil)},
		{"use_ssl absent", cfg.Images.Offload.S3.UseSSL, true},
		{"budget period", cfg.Teams[0].Budget.Period, "monthly"},
		{"key_sha256 lower-cased", cfg.Keys[0].KeySHA256, "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"},
		{"write_timeout default", cfg.Server.WriteTimeout, 60 * time.Second},
		{"concurrency", cfg.Server.Concurrency, 0},
		{"max_conns", cfg.Providers[0].MaxConns, 512},
		{"timeout", cfg.Providers[0].Timeout, 120 * time.Second},
		{"offload dir", cfg.Images.Offload.Dir, "data/images"},
		{"data_dir", cfg.DataDir, "./data"},
		{"batch max_share", cfg.Batch.MaxShare, 0.5},
		{"max_retry_after", cfg.Routing.Health.MaxRetryAfter, 60 * time.Second},
		{"images.fetch", cfg.Images.Fetch, ImageFetch{Timeout: 15 * time.Second, MaxPerRequest: 4, MaxBytesInFlight: 128 << 20}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}

	cfg, _ = mustParse(t, `
providers: [{ name: p, kind: gemini, base_url: "https://g.example", api_key: k, models: { m: m } }]
images: { offload: { s3: { use_ssl: false } } }
`, nil)
	if cfg.Images.Offload.S3.UseSSL {
		t.Error("use_ssl: false was overridden")
	}
	if cfg.Server.Listen != DefaultListen || cfg.Server.PublicURL != "http://127.0.0.1:8080" {
		t.Errorf("server defaults: %+v", cfg.Server)
	}
}

func TestDefaultsIdempotent(t *testing.T) {
	cfg, _ := mustParse(t, mustRead(t, "testdata/full.yaml"), fullEnv)
	once := *cfg
	once.Redis = new(Redis)
	*once.Redis = *cfg.Redis
	cfg.Defaults()
	if !reflect.DeepEqual(&once, cfg) {
		t.Errorf("second Defaults changed the config:\n%+v\n%+v", once, *cfg)
	}
	var zero Config
	zero.Defaults()
	again := zero
	again.Defaults()
	if !reflect.DeepEqual(zero, again) {
		t.Error("Defaults on a zero Config is not idempotent")
	}
}

// mustExpand decodes yml with env expansion, without defaults or validation.
func mustExpand(t *testing.T, yml string, m map[string]string) *Config {
	t.Helper()
	p := &parser{file: "cfg.yaml", getenv: env(m), lines: map[string]int{}}
	cfg, ok := p.parse([]byte(yml))
	if !ok || p.misshapen || len(p.problems) > 0 {
		t.Fatalf("parse: %v", p.problems.sorted())
	}
	return cfg
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEnvExpansion(t *testing.T) {
	const provider = "providers: [{ name: p, kind: gemini, base_url: \"https://g.example\", api_key: k, models: { m: m } }]\n"
	tests := []struct {
		name string
		yml  string
		env  map[string]string
		get  func(*Config) any
		want any
	}{
		{"set", "admin_key: ${A}", map[string]string{"A": "x"}, adminKey, "x"},
		{"unset with :- is empty", "admin_key: ${A:-}", nil, adminKey, ""},
		{"default when unset", "admin_key: ${A:-dflt}", nil, adminKey, "dflt"},
		{"default when empty", "admin_key: ${A:-dflt}", map[string]string{"A": ""}, adminKey, "dflt"},
		{"no default used when set", "admin_key: ${A:-dflt}", map[string]string{"A": "v"}, adminKey, "v"},
		{"empty default", "admin_key: ${A:-}", nil, adminKey, ""},
		{"inside text", "admin_key: pre-${A}-${B:-b}-post", map[string]string{"A": "a"}, adminKey, "pre-a-b-post"},
		{"double dollar kept", "admin_key: 'a$$b$${A}'", map[string]string{"A": "x"}, adminKey, "a$$b$${A}"},
		{"no-brace dollar kept", "admin_key: $A-${A}", map[string]string{"A": "x"}, adminKey, "$A-x"},
		{"trailing dollar", "admin_key: ${A}$", map[string]string{"A": "x"}, adminKey, "x$"},
		{"yaml-breaking value", "admin_key: ${A}", map[string]string{"A": "a: b #c\n- d: [e"}, adminKey, "a: b #c\n- d: [e"},
		{"yaml-breaking value quoted", `admin_key: "${A}"`, map[string]string{"A": "x\": {y: 1} #"}, adminKey, "x\": {y: 1} #"},
		{"env value not expanded again", "admin_key: ${A}", map[string]string{"A": "${B}", "B": "no"}, adminKey, "${B}"},
		{"null word stays a string", "admin_key: ${A}", map[string]string{"A": "null"}, adminKey, "null"},
		{"digits stay a string", "admin_key: ${A}", map[string]string{"A": "0123"}, adminKey, "0123"},
		{"date stays a string", "admin_key: ${A}", map[string]string{"A": "2001-12-14"}, adminKey, "2001-12-14"},
		{"int from default", "teams:\n- name: t\n  rpm: ${RPM:-600}", nil, teamRPM, int64(600)},
		{"int from env", "teams:\n- name: t\n  rpm: ${RPM:-600}", map[string]string{"RPM": "42"}, teamRPM, int64(42)},
		{"int from empty env", "teams:\n- name: t\n  rpm: ${RPM:-}", nil, teamRPM, int64(0)},
		{"int in a flow mapping, quoted", `teams: [{name: t, rpm: "${RPM}"}]`, map[string]string{"RPM": "42"}, teamRPM, int64(42)},
		{"float from env, quoted", "teams:\n- name: t\n  budget: {usd: '${U:-2.5}'}", nil,
			func(c *Config) any { return c.Teams[0].Budget.USD }, 2.5},
		{"duration from env", "routing:\n  health:\n    cooldown: ${CD:-90s}", nil, func(c *Config) any { return c.Routing.Health.Cooldown }, 90 * time.Second},
		{"optional bool from empty env", "keys:\n- name: k\n  key: s\n  offload_images: ${O:-}", nil,
			func(c *Config) any { return c.Keys[0].OffloadImages }, (*bool)(nil)},
		{"block scalar", "admin_key: |-\n  ${A}\n  line2", map[string]string{"A": "x"}, adminKey, "x\nline2"},
		{"sequence items", "redis:\n  addrs:\n  - ${H:-localhost}:6379\n  - ${H2}", map[string]string{"H2": "r2:6380"},
			func(c *Config) any { return c.Redis.Addrs }, []string{"localhost:6379", "r2:6380"}},
		{"anchor expanded once", "admin_key: &a ${L}\nredis:\n  addrs: [\"r:1\"]\n  password: *a", map[string]string{"F": "x", "L": "${F}"},
			func(c *Config) any { return c.AdminKey + "/" + c.Redis.Password }, "${F}/${F}"},
		{"explicit tag kept", "admin_key: !!str ${A}", map[string]string{"A": "12"}, adminKey, "12"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Expansion alone: the values here are too short for Validate's
			// minimum key lengths, which are not what is tested.
			cfg := mustExpand(t, provider+tc.yml+"\n", tc.env)
			if got := tc.get(cfg); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}

	t.Run("bool from env", func(t *testing.T) {
		cfg, _ := mustParse(t, provider+"images:\n  offload:\n    enabled: ${OFF:-false}\n    signing_key: ${SK}\n",
			map[string]string{"OFF": "true", "SK": strings.Repeat("s", 32)})
		if !cfg.Images.Offload.Enabled {
			t.Error("enabled: ${OFF} with OFF=true did not decode as true")
		}
	})
}

func adminKey(c *Config) any { return c.AdminKey }
func teamRPM(c *Config) any  { return c.Teams[0].RPM }

func TestEnvExpansionErrors(t *testing.T) {
	tests := []struct{ yml, want string }{
		{"admin_key: x\nlog: {level: \"${LEVEL\"}\n", "cfg.yaml:2: log.level: unterminated ${"},
		{"admin_key: ${1BAD}\n", "cfg.yaml:1: admin_key: bad ${...}"},
		{"admin_key: ${A B}\n", "cfg.yaml:1: admin_key: bad ${...}"},
		{"admin_key: ${A:-${B}}\n", "cfg.yaml:1: admin_key: nested ${...}"},
		{"admin_key: ${NANOGATE_ADMN_KEY}\n", "cfg.yaml:1: admin_key: ${NANOGATE_ADMN_KEY} is not set (write ${NANOGATE_ADMN_KEY:-} to allow it unset"},
	}
	for _, tc := range tests {
		_, _, err := Parse([]byte(tc.yml), "cfg.yaml", env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %q", tc.yml, err, tc.want)
		}
	}
}

func TestEmptyProviderKeyDisablesProvider(t *testing.T) {
	cfg, warns := mustParse(t, `
providers:
  - { name: laozhang, kind: openai, base_url: "https://l.example/v1", api_key: "${LZ}", models: { shared: s, lz-only: l }, price: { per_image: 0.035 } }
  - name: google
    kind: gemini
    base_url: https://g.example
    api_key: ${GEMINI_API_KEY:-}
    models: { shared: s, g-only: g }
keys: [{ name: k, key: secret-0123456789, models: [g-only] }]
`, map[string]string{"LZ": "sk-1"})
	if cfg.Providers[0].Disabled || !cfg.Providers[1].Disabled {
		t.Errorf("Disabled = %v, %v; want false, true", cfg.Providers[0].Disabled, cfg.Providers[1].Disabled)
	}
	if want := "cfg.yaml:7: provider google: api_key is empty; provider disabled"; !slices.Contains(warns, want) {
		t.Errorf("warnings %q lack %q", warns, want)
	}
	if got, want := cfg.PublicModels(), []string{"lz-only", "shared"}; !slices.Equal(got, want) {
		t.Errorf("PublicModels = %q, want %q (disabled provider's models left out)", got, want)
	}

	_, warns = mustParse(t, `providers: [{ name: p, kind: gemini, base_url: "https://g.example", models: { m: m } }]`, nil)
	if len(warns) != 2 || !strings.Contains(warns[1], "no provider is enabled") {
		t.Errorf("warnings with every provider disabled: %q", warns)
	}
}

func TestPriceMicros(t *testing.T) {
	p := Price{PerImage: 0.039, InputPerMTok: 0.1 + 0.2, OutputPerMTok: 2.5}
	if got := p.PerImageMicros(); got != 39000 {
		t.Errorf("PerImageMicros = %d", got)
	}
	if got := p.InputPerMTokMicros(); got != 300000 {
		t.Errorf("InputPerMTokMicros = %d", got)
	}
	if got := p.OutputPerMTokMicros(); got != 2500000 {
		t.Errorf("OutputPerMTokMicros = %d", got)
	}
	if got := (Price{PerImage: 0.0000004}).PerImageMicros(); got != 0 {
		t.Errorf("sub-micro price = %d, want 0", got)
	}
}

func TestKeyAllows(t *testing.T) {
	all := Key{}
	some := Key{Models: []string{"a", "b"}}
	for _, tc := range []struct {
		k     *Key
		model string
		want  bool
	}{
		{&all, "anything", true}, {&some, "a", true}, {&some, "b", true}, {&some, "c", false}, {&some, "", false},
	} {
		if got := tc.k.Allows(tc.model); got != tc.want {
			t.Errorf("%v.Allows(%q) = %v", tc.k.Models, tc.model, got)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	t.Setenv("NANOGATE_TEST_KEY", "sk-from-env")
	yml := withClientKey(`providers: [{ name: p, kind: gemini, base_url: "https://g.example", api_key: "${NANOGATE_TEST_KEY}", models: { m: m } }]`)
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Path != path || cfg.Providers[0].APIKey != "sk-from-env" {
		t.Errorf("Path %q, api_key %q", cfg.Path, cfg.Providers[0].APIKey)
	}
	if _, _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
