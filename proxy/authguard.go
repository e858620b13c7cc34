package proxy

import (
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// authGuard limits failed authentications per client IP: a client guessing
// keys gets 429 after maxFails in a minute, until the minute rolls over. It
// keeps at most maxIPs addresses (the map is dropped when full: a guard that
// forgets is better than one that eats memory under a spray of addresses).
type authGuard struct {
	mu       sync.Mutex
	window   time.Time
	fails    map[string]int
	maxFails int
	maxIPs   int
}

func newAuthGuard(maxFails int) *authGuard {
	return &authGuard{fails: map[string]int{}, maxFails: maxFails, maxIPs: 100_000}
}

// roll starts a new window when the minute is over. Call with mu held.
func (g *authGuard) roll() {
	now := time.Now()
	if now.Sub(g.window) >= time.Minute || len(g.fails) >= g.maxIPs {
		g.window = now
		clear(g.fails)
	}
}

// blocked reports whether ip used up its failures for this minute.
func (g *authGuard) blocked(ip string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.roll()
	return g.fails[ip] >= g.maxFails
}

// fail counts a failed authentication of ip.
func (g *authGuard) fail(ip string) {
	g.mu.Lock()
	g.roll()
	g.fails[ip]++
	g.mu.Unlock()
}

var errAuthFlood = &apiError{Status: fasthttp.StatusTooManyRequests, Type: "invalid_request_error", Code: "rate_limit_exceeded",
	RetryAfter: time.Minute, Message: "Too many failed authentications from this address; try again later."}
