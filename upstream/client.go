// Package upstream is the HTTP client nanogate uses to call providers: fasthttp's
// request and response types over a small pool of keep-alive connections that
// this package owns, so that a request can be cancelled through its context.
//
// fasthttp's own Client has no context: a call blocks until the upstream answers
// or its deadline passes, and an image takes ~10 s before the first byte. A
// client that leaves must stop that paid call, so every call here arms
// context.AfterFunc to expire the connection's deadline, which unblocks any read
// or write at once.
//
// There are no retries in this package: whether to try again (and where) is the
// router's decision alone.
package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"nanogate/internal/deadline"
	"nanogate/telemetry"
)

// ErrBodyTooLarge is returned when an upstream body exceeds the configured cap.
var ErrBodyTooLarge = errors.New("upstream body too large")

// Options tune a Client.
type Options struct {
	// MaxConns caps open connections to the host; callers wait for a free one.
	MaxConns int
	// IdleTimeout closes pooled connections unused for this long, below the
	// idle timeouts of common servers so that a reused connection is rarely stale.
	IdleTimeout time.Duration
	// DialTimeout bounds TCP connect plus TLS handshake.
	DialTimeout time.Duration
	// MaxBodyBytes caps a buffered (non-stream) response body.
	MaxBodyBytes int
	// TLSConfig overrides the default TLS settings (tests).
	TLSConfig *tls.Config
}

func (o *Options) defaults() {
	if o.MaxConns <= 0 {
		o.MaxConns = 512
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 30 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 64 << 20
	}
}

// Client sends requests to one upstream host (scheme, host and port of a base URL).
type Client struct {
	addr    string // host:port to dial
	host    string // Host header
	useTLS  bool
	tlsConf *tls.Config
	opts    Options
	sem     chan struct{} // one token per open connection
	// idleReady wakes a caller waiting for a connection when one goes back
	// to the pool (the pool keeps its token).
	idleReady chan struct{}
	mu        sync.Mutex
	idle      []*conn // LIFO: the most recently used connection is the warmest
	closed    bool
	dialer    net.Dialer
	basePath  string
	// probeAfter: a connection idle for less is reused without the
	// liveness peek (a syscall per call, about 4% of a busy gateway's CPU).
	// Servers close idle connections after seconds, and one that closes
	// sooner says so with Connection: close, which keeps the connection
	// out of the pool; a peer gone within this window fails one attempt,
	// which the router fails over, as a peer gone just after the peek would.
	probeAfter time.Duration
}

type conn struct {
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	lastUsed time.Time
	// expire unblocks a pending read or write at once by expiring the
	// deadline: made once per connection, not per call.
	expire func()
	probe  *prober
}

func newConn(nc net.Conn) *conn {
	return &conn{c: nc, br: bufio.NewReaderSize(nc, 32<<10), bw: bufio.NewWriterSize(nc, 16<<10),
		expire: func() { nc.SetDeadline(time.Unix(1, 0)) }, probe: newProber(nc)}
}

// New returns a Client for the host of baseURL (http or https).
func New(baseURL string, opts Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("upstream: parse base url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("upstream: base url scheme %q is not http or https", u.Scheme)
	}
	opts.defaults()
	c := &Client{
		host:       u.Host,
		useTLS:     u.Scheme == "https",
		opts:       opts,
		sem:        make(chan struct{}, opts.MaxConns),
		idleReady:  make(chan struct{}, 1),
		basePath:   u.EscapedPath(),
		probeAfter: 100 * time.Millisecond,
	}
	c.addr = u.Host
	if u.Port() == "" {
		if c.useTLS {
			c.addr = net.JoinHostPort(u.Hostname(), "443")
		} else {
			c.addr = net.JoinHostPort(u.Hostname(), "80")
		}
	}
	if c.useTLS {
		if opts.TLSConfig != nil {
			c.tlsConf = opts.TLSConfig.Clone()
		} else {
			c.tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if c.tlsConf.ServerName == "" {
			c.tlsConf.ServerName = u.Hostname()
		}
		// This client speaks HTTP/1.1 only.
		c.tlsConf.NextProtos = []string{"http/1.1"}
		if c.tlsConf.ClientSessionCache == nil {
			c.tlsConf.ClientSessionCache = tls.NewLRUClientSessionCache(64)
		}
	}
	c.dialer.Timeout = opts.DialTimeout
	c.dialer.KeepAlive = 30 * time.Second
	return c, nil
}

// Host returns the value for the Host header.
func (c *Client) Host() string { return c.host }

// BasePath returns the path of the base URL without a trailing slash.
func (c *Client) BasePath() string {
	p := c.basePath
	for len(p) > 0 && p[len(p)-1] == '/' {
		p = p[:len(p)-1]
	}
	return p
}

// Close closes idle connections and makes later calls fail. Connections in use
// are closed when their response is released.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	idle := c.idle
	c.idle = nil
	c.mu.Unlock()
	for _, cn := range idle {
		cn.c.Close()
		<-c.sem
	}
}

// Response is an upstream answer whose body may still be on the wire. Release
// it exactly once.
type Response struct {
	fasthttp.Response
	client *Client
	cn     *conn
	stop   func() bool
	buf    []byte // body of a non-stream response, reused through the pool
	ctx    context.Context
	done   bool // body fully read: the connection may be reused
}

var respPool = sync.Pool{New: func() any { return new(Response) }}

// Do writes req (its URI path, headers and body must be set; Host is filled in)
// and reads the response headers. With stream false the body is read into
// memory up to MaxBodyBytes; with stream true it is left on the connection for
// BodyStream. The call and the body reads end when ctx is done.
func (c *Client) Do(ctx context.Context, req *fasthttp.Request, stream bool) (*Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	telemetry.Inject(ctx, &req.Header) // the caller's trace goes on to the upstream
	cn, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		cn.c.SetDeadline(dl)
	} else {
		cn.c.SetDeadline(time.Time{})
	}
	r := respPool.Get().(*Response)
	r.client, r.cn, r.ctx = c, cn, ctx
	// The connection carries the deadline; only the end of the request
	// needs watching. An attempt's deadline context is left unarmed.
	watch := ctx
	if p, ok := deadline.Unarmed(ctx); ok {
		watch = p
	}
	r.stop = context.AfterFunc(watch, cn.expire)

	req.Header.SetHost(c.host)
	if err := req.Write(cn.bw); err != nil {
		r.Release()
		return nil, c.wrapErr(ctx, err)
	}
	if err := cn.bw.Flush(); err != nil {
		r.Release()
		return nil, c.wrapErr(ctx, err)
	}
	r.Response.StreamBody = true
	if err := r.Response.Read(cn.br); err != nil {
		r.Release()
		return nil, c.wrapErr(ctx, err)
	}
	if !stream {
		if err := r.readBody(); err != nil {
			r.Release()
			return nil, err
		}
		// The body is in memory: the connection goes back to the pool now,
		// not when the caller releases the response. The caller keeps the
		// body while its own client reads the answer, and a client that
		// never reads must not hold a connection that other callers wait for.
		r.freeConn()
	}
	return r, nil
}

// readBody reads the streamed body into the response's own reused buffer,
// capped at MaxBodyBytes.
func (r *Response) readBody() error {
	r.buf = r.buf[:0]
	bs := r.Response.BodyStream()
	if bs == nil {
		r.done = true
		return nil
	}
	max := r.client.opts.MaxBodyBytes
	cl := r.Response.Header.ContentLength()
	if cl > max {
		return ErrBodyTooLarge
	}
	if cl > 0 && cap(r.buf) < cl {
		r.buf = make([]byte, 0, cl)
	}
	for {
		if len(r.buf) == cap(r.buf) {
			r.buf = append(r.buf, 0)[:len(r.buf)]
		}
		n, err := bs.Read(r.buf[len(r.buf):cap(r.buf)])
		r.buf = r.buf[:len(r.buf)+n]
		if len(r.buf) > max {
			return ErrBodyTooLarge
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return r.client.wrapErr(r.ctx, err)
		}
	}
	r.done = true
	return nil
}

// ReadWhole reads a stream response's body whole, as Do does for a
// non-stream one (capped at MaxBodyBytes), and gives its connection back:
// for a caller that learns from the headers that the body is small. Body
// then returns it.
func (r *Response) ReadWhole() error {
	if err := r.readBody(); err != nil {
		return err
	}
	r.freeConn()
	return nil
}

// Body returns the buffered body of a non-stream response.
func (r *Response) Body() []byte { return r.buf }

// BodyStream returns the body of a stream response. Reading it to io.EOF lets
// the connection be reused.
func (r *Response) BodyStream() io.Reader { return (*bodyReader)(r) }

type bodyReader Response

func (b *bodyReader) Read(p []byte) (int, error) {
	r := (*Response)(b)
	bs := r.Response.BodyStream()
	if bs == nil {
		r.done = true
		return 0, io.EOF
	}
	n, err := bs.Read(p)
	if err == io.EOF {
		r.done = true
	} else if err != nil {
		err = r.client.wrapErr(r.ctx, err)
	}
	return n, err
}

// Release returns the connection to the pool when the body was read to its end,
// else closes it, and recycles the response. A buffered response gave its
// connection back when Do returned; Release then only recycles its buffer.
func (r *Response) Release() {
	if r.client == nil {
		return
	}
	r.freeConn()
	r.Response.Reset()
	if cap(r.buf) > 4<<20 {
		r.buf = nil // do not pin a huge buffer in the pool
	}
	r.client, r.stop, r.ctx, r.done = nil, nil, nil, false
	respPool.Put(r)
}

// freeConn gives the response's connection back: to the pool when its body
// was read to the end and its context did not spoil it, else closed.
func (r *Response) freeConn() {
	if r.cn == nil {
		return
	}
	stopped := false
	if r.stop != nil {
		stopped = r.stop()
		r.stop = nil
	}
	cn, c := r.cn, r.client
	r.cn = nil
	// A fired AfterFunc has expired the deadline: that connection is spoiled.
	reuse := r.done && stopped && !r.Response.ConnectionClose()
	r.Response.CloseBodyStream()
	if reuse {
		c.release(cn)
	} else {
		c.discard(cn)
	}
}

// wrapErr reports a cancelled or expired context as itself, not as the i/o
// timeout its deadline caused.
func (c *Client) wrapErr(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	// The connection's deadline is the context's, and its timer may fire a
	// moment before the context reports itself done.
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return context.DeadlineExceeded
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return err
}

func (c *Client) acquire(ctx context.Context) (*conn, error) {
	for {
		cn, err := c.takeIdle()
		if cn != nil || err != nil {
			return cn, err
		}
		// A caller waits for whichever comes first: room for a new
		// connection, or a busy one going back to the pool. Waiting for room
		// alone would strand it while every connection sits idle, holding
		// its token, until its context ends.
		select {
		case c.sem <- struct{}{}:
			nc, err := c.dial(ctx)
			if err != nil {
				<-c.sem
				return nil, c.wrapErr(ctx, err)
			}
			return newConn(nc), nil
		case <-c.idleReady:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// takeIdle pops the warmest idle connection that is still usable, closing
// stale ones; nil when there is none.
func (c *Client) takeIdle() (*conn, error) {
	now := time.Now()
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, errors.New("upstream: client closed")
		}
		n := len(c.idle)
		if n == 0 {
			c.mu.Unlock()
			return nil, nil
		}
		cn := c.idle[n-1]
		c.idle[n-1] = nil
		c.idle = c.idle[:n-1]
		more := n > 1
		c.mu.Unlock()
		if more {
			// One wake-up may stand for several released connections:
			// pass it on to the next waiter.
			c.signalIdle()
		}
		idle := now.Sub(cn.lastUsed)
		if idle < c.opts.IdleTimeout && (idle < c.probeAfter || cn.probe.alive()) {
			return cn, nil
		}
		c.discard(cn)
	}
}

// signalIdle wakes one caller waiting in acquire, if any, to look at the
// idle connections again.
func (c *Client) signalIdle() {
	select {
	case c.idleReady <- struct{}{}:
	default:
	}
}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	nc, err := c.dialer.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	if !c.useTLS {
		return nc, nil
	}
	tc := tls.Client(nc, c.tlsConf)
	hctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		nc.Close()
		return nil, err
	}
	return tc, nil
}

func (c *Client) release(cn *conn) {
	cn.c.SetDeadline(time.Time{})
	cn.lastUsed = time.Now()
	c.mu.Lock()
	if c.closed || cn.br.Buffered() > 0 {
		// Bytes past the response mean the upstream broke framing; never reuse.
		c.mu.Unlock()
		c.discard(cn)
		return
	}
	c.idle = append(c.idle, cn)
	c.mu.Unlock()
	c.signalIdle()
}

func (c *Client) discard(cn *conn) {
	cn.c.Close()
	<-c.sem
}
