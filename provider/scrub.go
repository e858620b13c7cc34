package provider

import (
	"net/url"
	"regexp"
	"strings"
)

// keyLike matches strings that look like credentials: OpenAI-style and Google
// API keys, bearer tokens, and key or token parameters in URLs.
var keyLike = regexp.MustCompile(`(?i)(sk-[a-z0-9_\-]{6,}|AIza[0-9a-z_\-]{10,}|bearer\s+[a-z0-9._\-]{8,}|([?&](key|api_key|apikey|token|access_token)=)[^&\s"']+)`)

// scrubber removes a provider's secrets and upstream address from messages
// before they reach a client or a log.
type scrubber struct {
	secrets []string
}

func newScrubber(key, baseURL string) *scrubber {
	s := &scrubber{}
	if len(key) >= 4 {
		s.secrets = append(s.secrets, key)
	}
	if u, err := url.Parse(baseURL); err == nil && u.Host != "" {
		s.secrets = append(s.secrets, u.Host)
	}
	return s
}

// clean returns msg without secrets, the upstream host or key-like strings,
// cut to a readable length.
func (s *scrubber) clean(msg string) string {
	for _, sec := range s.secrets {
		if strings.Contains(msg, sec) {
			msg = strings.ReplaceAll(msg, sec, "[redacted]")
		}
	}
	msg = keyLike.ReplaceAllStringFunc(msg, func(m string) string {
		if i := strings.IndexByte(m, '='); i >= 0 && (m[0] == '?' || m[0] == '&') {
			return m[:i+1] + "[redacted]"
		}
		return "[redacted]"
	})
	if len(msg) > 1000 {
		msg = msg[:1000] + "..."
	}
	return msg
}
