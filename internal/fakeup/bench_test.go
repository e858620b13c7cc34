package fakeup

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
)

// benchServer measures the cost of answering over one keep-alive connection with a bare client, so that
// B/op shows what the server allocates per request (the image itself must not be among it).
func benchServer(b *testing.B, kind Kind, path, body string) {
	s, err := Start(Options{Kind: kind, ImageSize: 1_500_000})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	req := []byte("POST " + path + " HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	br := bufio.NewReaderSize(conn, 64<<10)
	roundTrip := func() int64 {
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("status %d, %v", resp.StatusCode, err)
		}
		resp.Body.Close()
		return n
	}
	b.SetBytes(roundTrip()) // also builds and caches the image and the plan
	b.ReportAllocs()
	for b.Loop() {
		roundTrip()
	}
}

func BenchmarkGeminiGenerateContent1_5MB(b *testing.B) {
	benchServer(b, Gemini, "/v1beta/models/gemini-2.5-flash-image:generateContent", genBody)
}

func BenchmarkGeminiStreamSSE1_5MB(b *testing.B) {
	benchServer(b, Gemini, "/v1beta/models/gemini-2.5-flash-image:streamGenerateContent?alt=sse", genBody)
}

func BenchmarkOpenAIChat1_5MB(b *testing.B) {
	benchServer(b, OpenAI, "/v1/chat/completions", chatBody)
}

func BenchmarkOpenAIChatStream1_5MB(b *testing.B) {
	benchServer(b, OpenAI, "/v1/chat/completions", chatStreamUsageBody)
}
