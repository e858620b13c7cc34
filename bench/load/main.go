// Command load sends the same POST to a URL from c concurrent keep-alive
// connections for a fixed time and prints throughput and latency percentiles.
// Used by `make bench` to compare the gateway with its upstream called
// directly, side by side in one run.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "", "target URL")
	body := flag.String("body", `{"model":"gemini-2.5-flash-image-preview","messages":[{"role":"user","content":"draw"}]}`, "request body")
	key := flag.String("key", "", "bearer key")
	c := flag.Int("c", 8, "concurrent connections")
	d := flag.Duration("d", 5*time.Second, "duration of the measured phase")
	warm := flag.Duration("warmup", time.Second, "unmeasured warm-up")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "load: -url is required")
		os.Exit(2)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: *c, MaxConnsPerHost: *c, DisableCompression: true}
	cl := &http.Client{Transport: tr, Timeout: time.Minute}
	payload := []byte(*body)

	var mu sync.Mutex
	var lat []time.Duration
	var errs, non200 int
	measureFrom := time.Now().Add(*warm)
	end := measureFrom.Add(*d)
	var wg sync.WaitGroup
	for i := 0; i < *c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			var e, n2 int
			for {
				start := time.Now()
				if start.After(end) {
					break
				}
				req, _ := http.NewRequest("POST", *url, bytes.NewReader(payload))
				req.Header.Set("Content-Type", "application/json")
				if *key != "" {
					req.Header.Set("Authorization", "Bearer "+*key)
				}
				resp, err := cl.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				el := time.Since(start)
				if start.Before(measureFrom) {
					continue
				}
				switch {
				case err != nil:
					e++
				case resp.StatusCode != 200:
					n2++
				default:
					local = append(local, el)
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			errs += e
			non200 += n2
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(float64(len(lat)-1)*p)]
	}
	fmt.Printf("requests=%d rps=%.0f p50=%v p90=%v p99=%v errors=%d non200=%d\n",
		len(lat), float64(len(lat))/d.Seconds(), pct(0.5), pct(0.9), pct(0.99), errs, non200)
}
