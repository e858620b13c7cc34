package batch

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

// SignatureHeader carries a webhook's signature: "t=<unix>,v1=<hex>", where
// the hex is HMAC-SHA256 of "<t>.<body>" keyed with the hex SHA-256 of the
// key that created the batch (the key_sha256 of the config, which its owner
// can compute from the key and nobody else can).
const SignatureHeader = "x-nanogate-signature"

// Sign returns the signature header value of body sent at t.
func Sign(secret []byte, t int64, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	ts := strconv.FormatInt(t, 10)
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// WebhookOptions tune deliveries; zero values take the defaults.
type WebhookOptions struct {
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

// Webhooks delivers batch events: a POST of the batch object, signed, retried
// on failure. Deliveries are best effort across restarts: one in flight when
// the process stops is not sent again.
type Webhooks struct {
	o      WebhookOptions
	client *http.Client
	log    *zap.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// ErrNotPublic: a webhook URL resolved to an address that is not public.
var ErrNotPublic = errors.New("webhook: address is not public")

// NewWebhooks returns a sender.
func NewWebhooks(o WebhookOptions) *Webhooks {
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
	w := &Webhooks{o: o, log: o.Log}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	// Every dialled address is checked after DNS (the same guard as image
	// URLs): a webhook URL cannot make the gateway call its own network.
	dialer := &net.Dialer{Timeout: o.Timeout, Control: w.control}
	w.client = &http.Client{
		Timeout: o.Timeout,
		Transport: &http.Transport{Proxy: nil, DialContext: dialer.DialContext, TLSHandshakeTimeout: o.Timeout,
			ResponseHeaderTimeout: o.Timeout, MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second},
		// A redirect is not followed: it could point anywhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return w
}

func (w *Webhooks) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrNotPublic, network)
	}
	for _, a := range w.o.AllowAddrs {
		if a.Addr().Unmap() == ap.Addr().Unmap() && a.Port() == ap.Port() {
			return nil
		}
	}
	if !safefetch.Public(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrNotPublic, ap.Addr())
	}
	return nil
}

// Send delivers body to url in the background. Headers: content-type
// application/json, the signature, x-nanogate-event (batch.completed,
// batch.failed, batch.expired, batch.cancelled) and x-nanogate-batch.
func (w *Webhooks) Send(url string, secret []byte, event, batchID string, body []byte) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		wait := w.o.Backoff
		var err error
		for i := 1; i <= w.o.Attempts; i++ {
			if err = w.post(url, secret, event, batchID, body); err == nil {
				w.log.Info("batch webhook delivered", zap.String("batch", batchID), zap.String("event", event),
					zap.Int("attempt", i))
				return
			}
			if errors.Is(err, ErrNotPublic) {
				break
			}
			if i < w.o.Attempts {
				select {
				case <-w.ctx.Done():
					return
				case <-time.After(wait):
				}
				wait *= 2
			}
		}
		w.log.Warn("batch webhook not delivered", zap.String("batch", batchID), zap.String("event", event), zap.Error(err))
	}()
}

func (w *Webhooks) post(url string, secret []byte, event, batchID string, body []byte) error {
	req, err := http.NewRequestWithContext(w.ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "nanogate-webhook/1")
	req.Header.Set(SignatureHeader, Sign(secret, time.Now().Unix(), body))
	req.Header.Set("x-nanogate-event", event)
	req.Header.Set("x-nanogate-batch", batchID)
	resp, err := w.client.Do(req)
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
func (w *Webhooks) Close(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		w.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	w.cancel()
	<-done
}
