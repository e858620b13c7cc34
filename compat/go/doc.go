// Package compat holds the Go half of nanogate's SDK compatibility suite: github.com/openai/openai-go/v3,
// unmodified, against a running gateway in front of the fake upstreams. It lives in its own module so the SDK
// never enters the gateway's. Run it with scripts/compat.sh (or scripts/compat.sh go), which starts the
// gateway and the fakes and passes where they are in NANOGATE_COMPAT_* variables.
package compat
