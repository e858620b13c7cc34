package proxy

import (
	"bytes"
	"net"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// trusted is the set of reverse proxies whose X-Forwarded-For is believed
// (server.trusted_proxies).
type trusted []netip.Prefix

func parseTrusted(list []string) trusted {
	var t trusted
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			t = append(t, p.Masked())
		} else if a, err := netip.ParseAddr(s); err == nil {
			t = append(t, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	return t
}

func (t trusted) has(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr is the address of the client of ctx: its peer, or, when the
// peer is a trusted proxy, the last address of X-Forwarded-For that is not
// one (addresses before it were written by the client and prove nothing).
func (s *Server) clientAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	var peer netip.Addr
	if a, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		peer, _ = netip.AddrFromSlice(a.IP)
		peer = peer.Unmap()
	}
	if len(s.trusted) == 0 || !s.trusted.has(peer) {
		return peer
	}
	xff := ctx.Request.Header.Peek("X-Forwarded-For")
	client := peer
	for len(xff) > 0 {
		i := bytes.LastIndexByte(xff, ',')
		part := bytes.TrimSpace(xff[i+1:])
		xff = xff[:max(i, 0)]
		a, err := netip.ParseAddr(string(part))
		if err != nil {
			break // a malformed hop: trust what came before it
		}
		client = a.Unmap()
		if !s.trusted.has(client) {
			break
		}
	}
	return client
}

// clientIP is clientAddr as a map key for the failed-auth guard.
func (s *Server) clientIP(ctx *fasthttp.RequestCtx) string {
	a := s.clientAddr(ctx)
	if !a.IsValid() {
		return ctx.RemoteAddr().String()
	}
	b := a.As16()
	return string(b[:])
}
