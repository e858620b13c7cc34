// Command load sends the same POST to a URL and prints throughput and latency
// percentiles: closed-loop from -c keep-alive connections, or open-loop on one
// connection at -rate requests per second (latency measured from the time each
// request was due). bench/run uses the same package for `make bench`; this
// command is for trying one case by hand:
//
//	go run ./bench/load/cmd/load -url http://127.0.0.1:8080/v1/chat/completions \
//	  -key sk-nanogate-demo -c 32 -d 5s
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"nanogate/bench/load"
)

func main() {
	url := flag.String("url", "", "target URL (http://)")
	body := flag.String("body", `{"model":"gemini-2.5-flash-image-preview","messages":[{"role":"user","content":"draw"}]}`, "request body")
	key := flag.String("key", "", "bearer key")
	c := flag.Int("c", 8, "concurrent connections (closed loop)")
	rate := flag.Float64("rate", 0, "requests per second on one connection (open loop); 0: closed loop with -c")
	d := flag.Duration("d", 5*time.Second, "duration of the measured phase")
	warm := flag.Duration("warmup", time.Second, "unmeasured warm-up")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "load: -url is required")
		os.Exit(2)
	}
	var headers []string
	if *key != "" {
		headers = append(headers, "Authorization: Bearer "+*key)
	}
	req, err := load.NewPost(*url, []byte(*body), headers...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var r load.Result
	if *rate > 0 {
		r = load.Fixed(req, *rate, *warm, *d)
	} else {
		r = load.Closed(req, *c, *warm, *d)
	}
	fmt.Printf("requests=%d rps=%.0f p50=%v p90=%v p99=%v errors=%d non2xx=%d\n",
		r.OK, r.RPS(), r.Pct(0.5), r.Pct(0.9), r.Pct(0.99), r.Errors, r.Bad)
	if r.FirstErr != "" {
		fmt.Println("first error:", r.FirstErr)
	}
}
