package e2e

import (
	"bufio"
	"net"
	"sync"
	"testing"
	"time"
)

// TestTwoHundredConcurrentLargeImages: 200 concurrent requests for 1.5 MB
// images translated from Gemini are all served; the gateway's peak RSS is
// reported (the race detector inflates it: bench/RESULTS.md has the figure of
// a normal build).
func TestTwoHundredConcurrentLargeImages(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	e.google.SetImageSize(1500 << 10)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := e.post(t, chatBody(""))
			readAllQuiet(resp)
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[200] != 200 {
		t.Fatalf("statuses %v", codes)
	}
	t.Logf("peak RSS of the (race-built) gateway: %d MiB", e.gw.PeakRSS()>>20)
}

// TestSlowReaderDoesNotHoldOthers: a client reading a 2 MB answer at about
// 10 KB/s does not keep other requests from being served at once.
func TestSlowReaderDoesNotHoldOthers(t *testing.T) {
	e := startGeminiEnv(t, googleKey)
	e.google.SetImageSize(1500 << 10)
	c, err := net.Dial("tcp", e.gw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4096)
	body := chatBody("")
	c.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + clientKey +
		"\r\nContent-Type: application/json\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body))
	br := bufio.NewReaderSize(c, 1024)
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		buf := make([]byte, 1024)
		for {
			select {
			case <-stop:
				done <- n
				return
			case <-time.After(100 * time.Millisecond):
			}
			m, err := br.Read(buf)
			n += m
			if err != nil {
				done <- n
				return
			}
		}
	}()
	waitFor(t, 10*time.Second, "the slow reader's answer from the upstream", func() bool {
		return e.google.Requests() == 1 && e.google.InFlight() == 0
	})
	for i := 0; i < 5; i++ {
		start := time.Now()
		resp := e.post(t, chatBody(""))
		readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d while a slow reader is connected", resp.StatusCode)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("a request took %v behind a slow reader", d)
		}
	}
	close(stop)
	if n := <-done; n >= 2<<20 {
		t.Fatalf("the slow reader read the whole answer (%d bytes): it was not slow", n)
	}
}
