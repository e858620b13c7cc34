// Command fakeup runs both fake upstreams (an OpenAI-compatible reseller and the Gemini API) until SIGINT or
// SIGTERM, for manual demos, benchmarks and SDK compatibility suites against a running gateway. It prints one
// line per server started, "openai <base URL>", "gemini <base URL>" and "control <URL>", then serves.
//
// With -control ADDR (a loopback address; port 0 picks a free one) it also serves a small control API, so that
// tests written in any language can inject faults and read counters. ?server= is openai or gemini; where it
// is optional, leaving it out means both.
//
//	POST /fault?server=S     set a fault from a JSON body, snake_case fields of fakeup.Fault, durations as
//	                         Go duration strings, body as text: {"status":500}, {"latency":"3s","times":1},
//	                         {"hang":true}, {"garbage":true}, {"drop_mid_body":true}, {"stall_mid_stream":"2s"},
//	                         {"status":429,"header":{"retry-after":"1"}}, {"prepay":true}; unknown fields: 400
//	POST /reset?server=S     clear the fault and the counters; latency, images and image size go back to the
//	                         flags' values, thought signatures off
//	GET  /stats              {"openai":{"requests":N,"canceled":N,"inflight":N},"gemini":{...}}
//	POST /latency?server=S&d=2s  wait before every answer (a client leaving during it counts as canceled)
//	POST /images?server=S&n=2    images per answer
//	POST /image-size?server=S&bytes=1500000  bytes per generated PNG (0: fixtures/tiny.png)
//	GET  /last?server=S      the last request's body as received (server required); its path, with the
//	                         query, in the X-Fakeup-Path header
//	POST /thought-signatures?server=S&on=true  Gemini image parts carry a thoughtSignature, unique to each
//	                         answer and image (off again with on=false or /reset)
//	GET  /signatures?server=S  {"signatures":[...]}: those of the last answer that carried some, one per image
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"nanogate/internal/fakeup"
)

func main() {
	openaiAddr := flag.String("openai", "127.0.0.1:0", "listen address of the reseller (empty: do not start it)")
	geminiAddr := flag.String("gemini", "127.0.0.1:0", "listen address of the Gemini API (empty: do not start it)")
	controlAddr := flag.String("control", "", "loopback listen address of the control API (empty: none)")
	key := flag.String("key", "", "key both servers expect (empty: accept any)")
	imageSize := flag.Int("image-size", 0, "bytes per generated PNG (0: the 77-byte fixtures/tiny.png)")
	images := flag.Int("images", 1, "images per answer")
	latency := flag.Duration("latency", 0, "wait before every answer")
	models := flag.String("models", fakeup.DefaultGeminiModel, "comma-separated model names the Gemini API knows (others: 404)")
	flag.Parse()

	var servers []*fakeup.Server
	byName := map[string]*fakeup.Server{}
	start := func(kind fakeup.Kind, name, addr string) {
		if addr == "" {
			return
		}
		s, err := fakeup.Start(fakeup.Options{
			Kind: kind, Addr: addr, Key: *key, ImageSize: *imageSize, Images: *images, Latency: *latency,
			Models: strings.Split(*models, ","),
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "fakeup: %s: %v\n", name, err)
			os.Exit(1)
		}
		if *images == 0 {
			s.SetImages(0) // Options treats 0 as "default"
		}
		if *imageSize > 0 {
			fakeup.PNG(*imageSize) // build the image now, not on the first request
		}
		servers = append(servers, s)
		byName[name] = s
		fmt.Printf("%s %s\n", name, s.URL())
	}
	start(fakeup.OpenAI, "openai", *openaiAddr)
	start(fakeup.Gemini, "gemini", *geminiAddr)
	if len(servers) == 0 {
		fmt.Fprintln(os.Stderr, "fakeup: nothing to start")
		os.Exit(2)
	}
	if *controlAddr != "" {
		ln, err := listenControl(*controlAddr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "fakeup: control: %v\n", err)
			os.Exit(1)
		}
		c := &control{servers: byName, latency: *latency, images: *images, imageSize: *imageSize}
		go http.Serve(ln, c.handler()) //nolint:errcheck // ends with the process
		fmt.Printf("control http://%s\n", ln.Addr())
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	done := make(chan struct{})
	go func() {
		for _, s := range servers {
			s.Close()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}
