package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"nanogate/internal/fakeup"
	"nanogate/internal/gwtest"
	"nanogate/internal/poll"
)

const (
	stuckKey     = "sk-e2e-stuck-reader-key-0123"
	otherTeamKey = "sk-e2e-other-team-key-4567"
)

// startStuckEnv is a gateway in front of one reseller it may open only two
// connections to, answering 4 MiB images (far more than a socket buffers),
// with two teams' keys.
func startStuckEnv(t *testing.T, writeTimeout string) (*gwtest.Gateway, *fakeup.Server) {
	t.Helper()
	up := startFake(t, fakeup.Options{Kind: fakeup.OpenAI, Key: upstreamK1})
	up.SetImageSize(4 << 20)
	cfg := fmt.Sprintf(`
server:
  listen: "{{ADDR}}"
  shutdown_timeout: 1s
  write_timeout: %s
log: { level: info, format: json }
images: { format: images }            # not forwarded: a buffered answer is read whole
admin_key: "%s"
providers:
  - name: up
    kind: openai
    base_url: %s
    api_key: ${UP_KEY}
    models: { %s: upstream-model }
    price: { per_image: 0.035 }
    timeout: 20s
    max_conns: 2
routing:
  health: { failure_threshold: 3, cooldown: 60s }
teams:
  - name: stuck
  - name: others
keys:
  - name: stuck
    team: stuck
    key: ${STUCK_KEY}
  - name: other
    team: others
    key: ${OTHER_KEY}
`, writeTimeout, adminKey, up.URL(), model)
	gw := gwtest.Start(t, cfg, "UP_KEY="+upstreamK1, "STUCK_KEY="+stuckKey, "OTHER_KEY="+otherTeamKey)
	return gw, up
}

// stuckClient sends one chat request and never reads a byte of the answer.
func stuckClient(t *testing.T, addr, body string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := c.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + stuckKey +
		"\r\nContent-Type: application/json\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body)); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestStuckReadersDoNotHoldUpstreamConnections: four clients that never read
// their answers, against a provider limited to two connections, leave another
// team's request served and the provider healthy. A buffered answer gives its
// upstream connection back as soon as the upstream body is read; a stream
// whose client stops reading is cut after server.write_timeout, and its
// upstream call closed as a client that left, not as a provider failure.
func TestStuckReadersDoNotHoldUpstreamConnections(t *testing.T) {
	for _, tc := range []struct {
		name, stream, writeTimeout string
	}{
		{"buffered", "", "60s"},
		{"stream", `,"stream":true`, "2s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw, up := startStuckEnv(t, tc.writeTimeout)
			for i := 0; i < 4; i++ {
				stuckClient(t, gw.Addr, chatBody(tc.stream))
			}
			// All four reach the upstream in turn: the first two do not keep
			// their connections from the next two.
			if !poll.Within(30*time.Second, func() bool { return up.Requests() >= 4 }) {
				t.Errorf("%d of the 4 stuck clients' requests reached the upstream", up.Requests())
			}

			req, _ := http.NewRequest("POST", gw.URL+"/v1/chat/completions", strings.NewReader(chatBody(tc.stream)))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+otherTeamKey)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, resp)
			if resp.StatusCode != 200 || !strings.Contains(string(body), "data:image/png;base64,") {
				t.Fatalf("another team's request behind four stuck readers: %d: %.300s", resp.StatusCode, body)
			}

			var pv providersView
			if code := getJSON(t, gw.URL+"/admin/providers", adminKey, &pv); code != 200 || len(pv.Providers) != 1 {
				t.Fatalf("/admin/providers: %d %+v", code, pv)
			}
			if p := pv.Providers[0]; p.State != "healthy" || p.Failures != 0 {
				t.Errorf("the provider after stuck readers: state %s, %d failures (%s)", p.State, p.Failures, p.LastError)
			}
		})
	}
}
