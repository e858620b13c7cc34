package e2e

import (
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// collector is an OTLP/HTTP trace receiver on loopback: it keeps the spans
// it is sent, by trace id.
type collector struct {
	url   string
	mu    sync.Mutex
	spans map[string][]string // trace id (hex) -> span names
	attrs map[string]string   // span name -> its attributes, as text
}

func startCollector(t *testing.T) *collector {
	t.Helper()
	c := &collector{spans: map[string][]string{}, attrs: map[string]string{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		var req collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		c.mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					id := hex.EncodeToString(sp.TraceId)
					c.spans[id] = append(c.spans[id], sp.Name)
					c.attrs[sp.Name] = fmt.Sprint(sp.Attributes)
				}
			}
		}
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Write(out)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c.url = "http://" + ln.Addr().String()
	return c
}

func (c *collector) names(trace string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.spans[trace]...)
}

// TestTracesJoinTheClientsTrace: with an OTLP endpoint set, a request's
// span and its upstream attempt's span arrive at the collector under the
// trace id of the client's traceparent, and the upstream saw that trace id
// too.
func TestTracesJoinTheClientsTrace(t *testing.T) {
	col := startCollector(t)
	e, up := startOneReseller(t, nil, "OTEL_EXPORTER_OTLP_ENDPOINT="+col.url, "OTEL_BSP_SCHEDULE_DELAY=100")
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	resp := e.post(t, chatBody(""), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if tp := up.LastTraceparent(); !strings.Contains(tp, traceID) {
		t.Errorf("the upstream saw traceparent %q, want trace %s", tp, traceID)
	}
	waitFor(t, 10*time.Second, "the spans at the collector", func() bool {
		names := col.names(traceID)
		return len(names) >= 2
	})
	waitFor(t, 10*time.Second, "every span of the request", func() bool { return len(col.names(traceID)) >= 3 })
	names := strings.Join(col.names(traceID), ",")
	for _, want := range []string{"chat.completions", "admission", "upstream cheap"} {
		if !strings.Contains(names, want) {
			t.Errorf("spans %s lack %s", names, want)
		}
	}
	col.mu.Lock()
	attrs := col.attrs["chat.completions"]
	col.mu.Unlock()
	for _, want := range []string{"gen_ai.request.model", "nanogate.team", "design", "nanogate.images"} {
		if !strings.Contains(attrs, want) {
			t.Errorf("the request span lacks %s: %s", want, attrs)
		}
	}
	if strings.Contains(attrs, clientKey) {
		t.Error("a span holds the client's key")
	}
}
