package batch

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"nanogate/internal/poll"
	"nanogate/internal/webhook"
)

// TestWebhookNamesTheBatch: a batch event carries its kind, the batch's id
// in x-nanogate-batch and x-nanogate-event-id, and a signature.
func TestWebhookNamesTheBatch(t *testing.T) {
	var mu sync.Mutex
	var got http.Header
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got, body = r.Header.Clone(), b
		mu.Unlock()
	}))
	defer srv.Close()
	ap := netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
	w := NewWebhooks(WebhookOptions{AllowAddrs: []netip.AddrPort{ap}})
	sent := []byte(`{"id":"batch_x","status":"completed"}`)
	w.Send(srv.URL, []byte("secret"), "batch.completed", "batch_x", sent)
	poll.Until(t, 10*time.Second, "the delivery", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got != nil
	})
	w.Close(context.Background())
	mu.Lock()
	defer mu.Unlock()
	if got.Get("x-nanogate-event") != "batch.completed" || got.Get("x-nanogate-batch") != "batch_x" ||
		got.Get("x-nanogate-event-id") != "batch_x" || string(body) != string(sent) ||
		!strings.HasPrefix(got.Get(webhook.SignatureHeader), "t=") {
		t.Fatalf("headers %v body %s", got, body)
	}
}
