package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"
)

// idGen makes request ids: a random per-process prefix and a counter, unique
// without a random read per request.
type idGen struct {
	prefix string
	n      atomic.Uint64
}

func newIDGen() *idGen {
	var b [6]byte
	rand.Read(b[:])
	return &idGen{prefix: "req_" + hex.EncodeToString(b[:])}
}

func (g *idGen) next() string {
	var b [48]byte
	return string(strconv.AppendUint(append(b[:0], g.prefix...), g.n.Add(1), 36))
}

// requestID echoes a sane client id or makes one. A client id longer than 128
// bytes or with bytes outside printable ASCII is replaced, so that it cannot
// break a log line or a header.
func (g *idGen) requestID(client []byte) string {
	if len(client) == 0 || len(client) > 128 {
		return g.next()
	}
	for _, c := range client {
		if c <= ' ' || c > '~' || c == '"' || c == '\\' {
			return g.next()
		}
	}
	return string(client)
}
