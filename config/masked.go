package config

import (
	"net/url"

	"gopkg.in/yaml.v3"
)

// masked stands for a secret in Masked.
const masked = "********"

func mask(s *string) {
	if *s != "" {
		*s = masked
	}
}

// Masked is the configuration in force as YAML, with every secret masked:
// keys, the admin key, provider keys, the Redis password, the link signing
// key, S3 credentials, and the query and user info of URLs (they may carry
// tokens). What is unset stays empty, so an operator sees which secrets
// are set without seeing them. Key hashes stay: they are not secrets, and
// they tell keys apart.
func (c *Config) Masked() ([]byte, error) {
	m := *c
	mask(&m.AdminKey)
	m.Providers = append([]Provider(nil), c.Providers...)
	for i := range m.Providers {
		mask(&m.Providers[i].APIKey)
		m.Providers[i].BaseURL = maskURL(m.Providers[i].BaseURL)
	}
	m.Keys = append([]Key(nil), c.Keys...)
	for i := range m.Keys {
		mask(&m.Keys[i].Key)
		m.Keys[i].WebhookURL = maskURL(m.Keys[i].WebhookURL)
	}
	if c.Redis != nil {
		r := *c.Redis
		mask(&r.Password)
		m.Redis = &r
	}
	o := &m.Images.Offload
	mask(&o.SigningKey)
	mask(&o.S3.AccessKey)
	mask(&o.S3.SecretKey)
	return yaml.Marshal(&m)
}

// maskURL keeps a URL's scheme, host and path, masking user info and query.
func maskURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return masked
	}
	if u.User != nil {
		u.User = url.User(masked)
	}
	if u.RawQuery != "" {
		u.RawQuery = "masked"
	}
	return u.String()
}
