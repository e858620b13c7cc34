// Command fakeup runs both fake upstreams (an OpenAI-compatible reseller and the Gemini API) until SIGINT or
// SIGTERM, for manual demos and benchmarks against a running gateway.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"nanogate/internal/fakeup"
)

func main() {
	openaiAddr := flag.String("openai", "127.0.0.1:0", "listen address of the reseller (empty: do not start it)")
	geminiAddr := flag.String("gemini", "127.0.0.1:0", "listen address of the Gemini API (empty: do not start it)")
	key := flag.String("key", "", "key both servers expect (empty: accept any)")
	imageSize := flag.Int("image-size", 0, "bytes per generated PNG (0: the 77-byte fixtures/tiny.png)")
	images := flag.Int("images", 1, "images per answer")
	latency := flag.Duration("latency", 0, "wait before every answer")
	flag.Parse()

	var servers []*fakeup.Server
	start := func(kind fakeup.Kind, name, addr string) {
		if addr == "" {
			return
		}
		s, err := fakeup.Start(fakeup.Options{
			Kind: kind, Addr: addr, Key: *key, ImageSize: *imageSize, Images: *images, Latency: *latency,
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
		fmt.Printf("%s %s\n", name, s.URL())
	}
	start(fakeup.OpenAI, "openai", *openaiAddr)
	start(fakeup.Gemini, "gemini", *geminiAddr)
	if len(servers) == 0 {
		fmt.Fprintln(os.Stderr, "fakeup: nothing to start")
		os.Exit(2)
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
