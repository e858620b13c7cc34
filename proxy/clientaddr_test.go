package proxy

import (
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestClientAddrBelievesOnlyTrustedProxies(t *testing.T) {
	s := &Server{trusted: parseTrusted([]string{"10.0.0.0/8", "192.168.1.1"})}
	for _, tc := range []struct {
		peer, xff, want string
	}{
		{"203.0.113.5", "", "203.0.113.5"},
		{"203.0.113.5", "1.2.3.4", "203.0.113.5"},                 // not a proxy of ours: its header proves nothing
		{"10.1.2.3", "198.51.100.7", "198.51.100.7"},              // behind our proxy
		{"10.1.2.3", "6.6.6.6, 198.51.100.7", "198.51.100.7"},     // the client wrote 6.6.6.6 itself
		{"10.1.2.3", "198.51.100.7, 192.168.1.1", "198.51.100.7"}, // two of our proxies
		{"10.1.2.3", "garbage, 198.51.100.7", "198.51.100.7"},     // a malformed hop further left is not reached
		{"10.1.2.3", "198.51.100.7, garbage", "10.1.2.3"},         // a malformed last hop: the proxy itself
		{"10.1.2.3", "", "10.1.2.3"},                              // no header
		{"::ffff:10.1.2.3", "2001:db8::1", "2001:db8::1"},         // mapped IPv4 peer, IPv6 client
	} {
		var req fasthttp.Request
		if tc.xff != "" {
			req.Header.Set("X-Forwarded-For", tc.xff)
		}
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP(tc.peer), Port: 1234}, nil)
		if got := s.clientAddr(&ctx).String(); got != tc.want {
			t.Errorf("peer %s, X-Forwarded-For %q: client %s, want %s", tc.peer, tc.xff, got, tc.want)
		}
	}
}
