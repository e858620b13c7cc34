package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// problems parses yml and returns its problems, failing if there are none.
func problems(t *testing.T, yml string, m map[string]string) Problems {
	t.Helper()
	cfg, _, err := Parse([]byte(withClientKey(yml)), "cfg.yaml", env(m))
	if err == nil {
		t.Fatalf("Parse succeeded: %+v", cfg)
	}
	if cfg != nil {
		t.Error("Parse returned a Config with an error")
	}
	var ps *Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error %T is not *Problems: %v", err, err)
	}
	return *ps
}

// lines formats each problem as Problem.String does.
func lines(ps Problems) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func TestUnknownKeysReportedWithPathAndLine(t *testing.T) {
	yml := `server:
  listen: "127.0.0.1:8080"
  listn: x
bogus: 1
providers:
  - name: a
    kind: openai
    base_url: https://a.example/v1
    api_key: k
    modle: {m: m}
    models: {any-name: m, "another one": n}
    price: {per_image: 1, per_imag: 2}
routing:
  health: {cooldown: 1s, cooldwn: 2s}
images:
  offload:
    s3:
      bukket: b
teams:
  - name: t
    budget: {usd: 1, perid: daily}
keys:
  - name: k1
    key: abc-0123456789abcdef
  - name: k2
    key: abd-0123456789abcdef
    webhook: http://x
redis: {addrs: ["r:1"], db: 0, pasword: x}
`
	want := []string{
		"cfg.yaml:3: server.listn: unknown key",
		"cfg.yaml:4: bogus: unknown key",
		"cfg.yaml:10: providers[0].modle: unknown key",
		"cfg.yaml:12: providers[0].price.per_imag: unknown key",
		"cfg.yaml:14: routing.health.cooldwn: unknown key",
		"cfg.yaml:18: images.offload.s3.bukket: unknown key",
		"cfg.yaml:21: teams[0].budget.perid: unknown key",
		"cfg.yaml:27: keys[1].webhook: unknown key",
		"cfg.yaml:28: redis.pasword: unknown key",
	}
	got := lines(problems(t, yml, nil))
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestUnknownKeyInMergeAndAlias(t *testing.T) {
	yml := `x-base: &base
  kind: gemini
  typo: 1
providers:
  - <<: *base
    name: a
`
	got := strings.Join(lines(problems(t, yml, nil)), "\n")
	for _, want := range []string{"cfg.yaml:1: x-base: unknown key", "cfg.yaml:3: providers[0].typo: unknown key"} {
		if !strings.Contains(got, want) {
			t.Errorf("problems:\n%s\nlack %q", got, want)
		}
	}
}

func TestTypeErrorsReportedWithPathAndLine(t *testing.T) {
	yml := `server:
  max_body_bytes: [1]
  shutdown_timeout: 30
log: info
providers:
  - name: a
    timeout: abc
    price: {per_image: cheap}
    models: {m: [x], n: ok}
teams:
  - name: t
    rpm: abc
keys: {name: k}
images: {offload: {enabled: maybe}}
redis: {addrs: "r:1"}
`
	want := []string{
		"cfg.yaml:2: server.max_body_bytes: want an integer, got a sequence",
		"cfg.yaml:3: server.shutdown_timeout: cannot unmarshal !!int `30` into time.Duration (durations are written like \"30s\" or \"24h\")",
		"cfg.yaml:4: log: want a mapping, got a scalar",
		"cfg.yaml:7: providers[0].timeout: cannot unmarshal !!str `abc` into time.Duration",
		"cfg.yaml:8: providers[0].price.per_image: cannot unmarshal !!str `cheap` into float64",
		"cfg.yaml:9: providers[0].models.m: want a string, got a sequence",
		"cfg.yaml:12: teams[0].rpm: cannot unmarshal !!str `abc` into int64",
		"cfg.yaml:13: keys: want a sequence, got a mapping",
		"cfg.yaml:14: images.offload.enabled: cannot unmarshal !!str `maybe` into bool",
		"cfg.yaml:15: redis.addrs: want a sequence, got a scalar",
	}
	got := lines(problems(t, yml, nil))
	joined := strings.Join(got, "\n")
	for _, w := range want {
		if !strings.Contains(joined, w) {
			t.Errorf("problems:\n%s\nlack %q", joined, w)
		}
	}
	// Each bad line is reported once, even though yaml.v3 reports it too;
	// and Validate does not run on a misshapen config.
	if len(got) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(got), len(want), joined)
	}
}

func TestTypeErrorFromEnvironment(t *testing.T) {
	ps := problems(t, "teams:\n- name: t\n  rpm: ${RPM}\n", map[string]string{"RPM": "lots"})
	if got := ps[0].String(); !strings.HasPrefix(got, "cfg.yaml:3: teams[0].rpm: cannot unmarshal") {
		t.Errorf("got %q", got)
	}
}

func TestDuplicateKeys(t *testing.T) {
	yml := `providers:
  - name: a
    kind: gemini
    name: b
`
	got := strings.Join(lines(problems(t, yml, nil)), "\n")
	if want := "cfg.yaml:4: providers[0].name: duplicate key (first at line 2)"; got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestSyntaxErrors(t *testing.T) {
	tests := []struct{ yml, want string }{
		{"server:\n  listen: [\n", "cfg.yaml:2: did not find expected node content"},
		{"a: b\n c: d\n", "cfg.yaml:2: mapping values are not allowed"},
		{"log: {level: info}\n---\nlog: {level: debug}\n", "cfg.yaml:2: only one YAML document is allowed"},
		{"providers: *nowhere\n", "unknown anchor"},
	}
	for _, tc := range tests {
		_, _, err := Parse([]byte(tc.yml), "cfg.yaml", env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %q", tc.yml, err, tc.want)
		}
	}
}

func TestEmptyFileIsInvalidNotAPanic(t *testing.T) {
	for _, yml := range []string{"", "\n# nothing\n", "~\n", "---\n"} {
		_, _, err := Parse([]byte(yml), "cfg.yaml", env(nil))
		var ps *Problems
		if !errors.As(err, &ps) {
			t.Fatalf("%q: error %v", yml, err)
		}
		if got := ps.Error(); !strings.Contains(got, "providers: at least one provider is required") ||
			!strings.Contains(got, "keys: at least one client key is required") {
			t.Errorf("%q: %s", yml, got)
		}
	}
}

func TestAliasBombStaysBounded(t *testing.T) {
	// Each level merges nine aliases of the one before: walked naively,
	// 9^9 mappings.
	var b strings.Builder
	b.WriteString("providers:\n  - &l0 {name: a}\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "  - &l%d {<<: [%s]}\n", i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d,", i-1), 9), ","))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Parse([]byte(b.String()), "cfg.yaml", env(nil))
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Parse of an alias bomb did not return in 5s")
	}
}

func FuzzParse(f *testing.F) {
	full, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	for _, s := range []string{
		"", "~", "a: &a [*a]", "providers: [{name: x, <<: {kind: gemini}}]",
		"admin_key: ${A:-${B}}", "admin_key: ${", "teams: [{rpm: ${N}}]", "keys: [{models: [${M}]}]",
		"images: {offload: {s3: !!map {use_ssl: yes}}}", "log: !!binary aGk=", "redis: {addrs: [{a: 1}]}",
		"<<: {server: {listen: ':1'}}", "providers: [*x]", "%YAML 1.1\n---\na: 1",
	} {
		f.Add([]byte(s))
	}
	getenv := env(map[string]string{"A": "", "N": "5", "M": "m: #", "GEMINI_API_KEY": "k"})
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, _, err := Parse(data, "f.yaml", getenv)
		if err != nil {
			var ps *Problems
			if !errors.As(err, &ps) || len(*ps) == 0 || err.Error() == "" {
				t.Fatalf("error %T %v is not a non-empty *Problems", err, err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that Validate rejects: %v", err)
		}
		cfg.PublicModels()
	})
}

func TestDecodeAndValidateProblemsReportedTogether(t *testing.T) {
	yml := `log: {level: loud, colour: red}
teams:
  - name: t
    rpm: fast
    budget: {usd: -1}
`
	got := problems(t, yml, nil).Error()
	want := strings.Join([]string{
		"cfg.yaml:1: log.colour: unknown key",
		`cfg.yaml:1: log.level: "loud" is not one of debug, info, warn, error`,
		"cfg.yaml:4: teams[0].rpm: cannot unmarshal !!str `fast` into int64",
		"cfg.yaml:5: teams[0].budget.usd: must be a positive number up to 1e+09",
		"cfg.yaml: providers: at least one provider is required",
	}, "\n")
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}
