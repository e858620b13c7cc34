// Package webhook posts signed events to URLs that users configure: a batch
// that ended, a budget alert. Each delivery is a POST of a JSON body, signed
// with HMAC-SHA256, retried with backoff, and may only reach public addresses
// (the same guard as image URL fetches), so that a URL cannot make the gateway
// call its own network.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"nanogate/internal/safefetch"
)

// Headers of every delivery. SignatureHeader is "t=<unix>,v1=<hex>", where
// the hex is HMAC-SHA256 of "<t>.<body>" keyed with the secret of the
// delivery (the hex SHA-256 of a key, which its owner can compute from the
// key and nobody else can). EventHeader names the kind of event
// (batch.completed, budget.alert) and EventIDHeader the event's id, the same
// on every attempt, so that a receiver can drop a repeat.
const (
	SignatureHeader = "x-nanogate-signature"
	EventHeader     = "x-nanogate-event"
	EventIDHeader   = "x-nanogate-event-id"
)

// Sign returns the signature header value of body sent at t.
func Sign(secret []byte, t int64, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	ts := strconv.FormatInt(t, 10)
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Options tune deliveries; zero values take the defaults.
type Options struct {
	// Attempts per delivery (5), Backoff before the second (1s, doubling).
	Attempts int
	Backoff  time.Duration
	// Timeout bounds one attempt (10s).
	Timeout time.Duration
	// AllowAddrs lists ip:port pairs that may be called although they are
	// not public addresses. It exists for tests, whose receivers listen on
	// loopback; in production webhooks only reach public addresses.
	AllowAddrs []netip.AddrPort
	Log        *zap.Logger
}

// Event is one delivery.
type Event struct {
	// Kind goes in EventHeader and in the log.
	Kind string
	// ID goes in EventIDHeader and in the log.
	ID string
	// Header and Value, when Header is set, are one more header (a batch
	// event's x-nanogate-batch, which its receivers read).
	Header, Value string
	Body          []byte
}

// Sender delivers events in the background. Deliveries are best effort
// across restarts: one in flight when the process stops is not sent again.
type Sender struct {
	o      Options
	client *http.Client
	log    *zap.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// ErrNotPublic: a webhook URL resolved to an address that is not public.
var ErrNotPublic = errors.New("webhook: address is not public")

// New returns a sender.
func New(o Options) *Sender {
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	s := &Sender{o: o, log: o.Log}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// Every dialled address is checked after DNS.
	dialer := &net.Dialer{Timeout: o.Timeout, Control: s.control}
	s.client = &http.Client{
		Timeout: o.Timeout,
		Transport: &http.Transport{Proxy: nil, DialContext: dialer.DialContext, TLSHandshakeTimeout: o.Timeout,
			ResponseHeaderTimeout: o.Timeout, MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second},
		// A redirect is not followed: it could point anywhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return s
}

func (s *Sender) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrNotPublic, network)
	}
	for _, a := range s.o.AllowAddrs {
		if a.Addr().Unmap() == ap.Addr().Unmap() && a.Port() == ap.Port() {
			return nil
		}
	}
	if !safefetch.Public(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrNotPublic, ap.Addr())
	}
	return nil
}

// Send delivers ev to url in the background, signed with secret. Headers:
// content-type application/json, SignatureHeader, EventHeader,
// EventIDHeader and ev's own.
func (s *Sender) Send(url string, secret []byte, ev Event) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		wait := s.o.Backoff
		var err error
		for i := 1; i <= s.o.Attempts; i++ {
			if err = s.post(url, secret, ev); err == nil {
				s.log.Info("webhook delivered", zap.String("event", ev.Kind), zap.String("id", ev.ID), zap.Int("attempt", i))
				return
			}
			if errors.Is(err, ErrNotPublic) {
				break
			}
			if i < s.o.Attempts {
				select {
				case <-s.ctx.Done():
					return
				case <-time.After(wait):
				}
				wait *= 2
			}
		}
		s.log.Warn("webhook not delivered", zap.String("event", ev.Kind), zap.String("id", ev.ID), zap.Error(err))
	}()
}

func (s *Sender) post(url string, secret []byte, ev Event) error {
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, url, bytes.NewReader(ev.Body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "nanogate-webhook/1")
	req.Header.Set(SignatureHeader, Sign(secret, time.Now().Unix(), ev.Body))
	req.Header.Set(EventHeader, ev.Kind)
	req.Header.Set(EventIDHeader, ev.ID)
	if ev.Header != "" {
		req.Header.Set(ev.Header, ev.Value)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		if errors.Is(err, ErrNotPublic) {
			return ErrNotPublic
		}
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook: answered HTTP %d", resp.StatusCode)
	}
	return nil
}

// Close waits for deliveries in flight until ctx ends, then abandons them.
func (s *Sender) Close(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	s.cancel()
	<-done
}
