package config

import (
	"strings"
	"testing"
)

func TestMaskedShowsNoSecret(t *testing.T) {
	secrets := map[string]string{
		"ADMIN": "admin-secret-0123456789abcdef", "PK": "provider-secret-key", "CK": "client-secret-0123456",
		"RP": "redis-pass-word", "SK": strings.Repeat("signing!", 5), "S3A": "s3-access-key", "S3S": "s3-secret-key",
	}
	cfg, _ := mustParse(t, `
admin_key: ${ADMIN}
redis: { addrs: ["127.0.0.1:6379"], password: "${RP}" }
providers:
  - { name: g, kind: gemini, base_url: "https://u:p@g.example/v1beta?key=${PK}", api_key: "${PK}", models: { m: gemini-2.5-flash-image } }
images: { offload: { signing_key: "${SK}", s3: { access_key: "${S3A}", secret_key: "${S3S}" } } }
keys:
  - { name: k, key: "${CK}", webhook_url: "https://hooks.example/x?token=${CK}" }
`, secrets)
	b, err := cfg.Masked()
	if err != nil {
		t.Fatal(err)
	}
	out := string(b)
	for name, v := range secrets {
		if strings.Contains(out, v) {
			t.Errorf("the masked config shows %s:\n%s", name, out)
		}
	}
	for _, want := range []string{"admin_key: '********'", "https://%2A%2A%2A%2A%2A%2A%2A%2A@g.example/v1beta?masked", "name: k", "max_body_bytes: 33554432"} {
		if !strings.Contains(out, want) {
			t.Errorf("the masked config lacks %q:\n%s", want, out)
		}
	}
	if cfg.Keys[0].Key != secrets["CK"] || cfg.Providers[0].APIKey != secrets["PK"] {
		t.Error("masking changed the config in force")
	}
}
