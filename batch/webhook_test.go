package batch

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWebhookSignedAndGuarded(t *testing.T) {
	got := make(chan *http.Request, 4)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(500) // the first attempt fails: retried
			return
		}
		got <- r
	}))
	defer srv.Close()
	ap := netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
	body := []byte(`{"id":"batch_x","status":"completed"}`)

	w := NewWebhooks(WebhookOptions{Backoff: 10 * time.Millisecond, AllowAddrs: []netip.AddrPort{ap}})
	w.Send(srv.URL, []byte("secret"), "batch.completed", "batch_x", body)
	select {
	case r := <-got:
		sig := r.Header.Get(SignatureHeader)
		ts := strings.TrimPrefix(strings.Split(sig, ",")[0], "t=")
		var tsn int64
		for _, c := range ts {
			tsn = tsn*10 + int64(c-'0')
		}
		if sig != Sign([]byte("secret"), tsn, body) || r.Header.Get("x-nanogate-event") != "batch.completed" {
			t.Errorf("signature %q", sig)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not delivered")
	}
	w.Close(context.Background())

	// Without the test allowance, loopback is not reachable.
	guarded := NewWebhooks(WebhookOptions{Attempts: 1})
	if err := guarded.post(srv.URL, []byte("s"), "e", "b", body); !errors.Is(err, ErrNotPublic) {
		t.Errorf("loopback webhook: %v", err)
	}
	guarded.Close(context.Background())
	if want := "t=1700000000,v1="; !strings.HasPrefix(Sign([]byte("k"), 1700000000, body), want) {
		t.Errorf("Sign format")
	}
}
