package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"nanogate/internal/poll"
)

// delivery is what a receiver got.
type delivery struct {
	header http.Header
	body   []byte
}

// receiver is a loopback webhook endpoint whose first fail answers are 500.
func receiver(t *testing.T, fail int) (*httptest.Server, func() []delivery) {
	var mu sync.Mutex
	var got []delivery
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls <= fail {
			w.WriteHeader(500)
			return
		}
		got = append(got, delivery{r.Header.Clone(), b})
	}))
	t.Cleanup(srv.Close)
	return srv, func() []delivery {
		mu.Lock()
		defer mu.Unlock()
		return append([]delivery(nil), got...)
	}
}

// validSignature checks a signature header the way a receiver would,
// without Sign.
func validSignature(secret []byte, header string, body []byte) bool {
	var ts, v1 string
	for _, p := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			v1 = v
		}
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "." + string(body)))
	return ts != "" && hmac.Equal([]byte(v1), []byte(hex.EncodeToString(mac.Sum(nil))))
}

func TestSendSignsRetriesAndNamesTheEvent(t *testing.T) {
	srv, got := receiver(t, 1) // the first attempt fails: retried
	ap := netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
	s := New(Options{Backoff: time.Millisecond, AllowAddrs: []netip.AddrPort{ap}})
	body := []byte(`{"object":"budget.alert","id":"alert_1"}`)
	s.Send(srv.URL, []byte("secret"), Event{Kind: "budget.alert", ID: "alert_1", Body: body})
	poll.Until(t, 10*time.Second, "the delivery", func() bool { return len(got()) == 1 })
	s.Close(context.Background())
	d := got()[0]
	if string(d.body) != string(body) || !validSignature([]byte("secret"), d.header.Get(SignatureHeader), body) ||
		d.header.Get(EventHeader) != "budget.alert" || d.header.Get(EventIDHeader) != "alert_1" ||
		d.header.Get("Content-Type") != "application/json" || d.header.Get("x-nanogate-batch") != "" {
		t.Fatalf("delivery %v %s", d.header, d.body)
	}
	if validSignature([]byte("other"), d.header.Get(SignatureHeader), body) {
		t.Fatal("the signature holds for another secret")
	}
}

func TestSendAddsTheEventsOwnHeader(t *testing.T) {
	srv, got := receiver(t, 0)
	ap := netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
	s := New(Options{AllowAddrs: []netip.AddrPort{ap}})
	s.Send(srv.URL, []byte("k"), Event{Kind: "batch.completed", ID: "batch_x", Header: "x-nanogate-batch", Value: "batch_x", Body: []byte(`{}`)})
	poll.Until(t, 10*time.Second, "the delivery", func() bool { return len(got()) == 1 })
	s.Close(context.Background())
	if h := got()[0].header; h.Get("x-nanogate-batch") != "batch_x" || h.Get(EventIDHeader) != "batch_x" {
		t.Fatalf("headers %v", h)
	}
}

func TestLoopbackIsNotReachableWithoutTheTestAllowance(t *testing.T) {
	srv, got := receiver(t, 0)
	s := New(Options{Attempts: 1})
	defer s.Close(context.Background())
	if err := s.post(srv.URL, []byte("s"), Event{Kind: "e", ID: "i", Body: []byte(`{}`)}); !errors.Is(err, ErrNotPublic) {
		t.Errorf("loopback webhook: %v", err)
	}
	if len(got()) != 0 {
		t.Error("the loopback receiver was called")
	}
}

func TestSignFormat(t *testing.T) {
	body := []byte(`{}`)
	sig := Sign([]byte("k"), 1700000000, body)
	if !strings.HasPrefix(sig, "t=1700000000,v1=") || !validSignature([]byte("k"), sig, body) {
		t.Errorf("Sign: %q", sig)
	}
}
