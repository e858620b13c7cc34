// Command floorproxy is the least a gateway can do: read a request, send its
// body to one upstream over a keep-alive connection, and copy the answer
// back, with fasthttp on both sides and nothing else (no parsing, limits,
// accounting or log). bench/run measures it next to nanogate as the floor
// of what any gateway adds on this machine.
package main

import (
	"flag"
	"log"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "listen address")
	upstream := flag.String("upstream", "", "URL every POST is sent to")
	key := flag.String("key", "", "bearer key sent upstream")
	flag.Parse()
	if *upstream == "" {
		log.Fatal("floorproxy: -upstream is required")
	}
	auth := "Bearer " + *key
	client := &fasthttp.Client{}
	handler := func(ctx *fasthttp.RequestCtx) {
		if !ctx.IsPost() {
			ctx.SetBodyString("ok") // readiness
			return
		}
		req := fasthttp.AcquireRequest()
		defer fasthttp.ReleaseRequest(req)
		req.SetRequestURI(*upstream)
		req.Header.SetMethod(fasthttp.MethodPost)
		req.Header.Set("Authorization", auth)
		req.Header.SetContentType("application/json")
		req.SetBodyRaw(ctx.PostBody())
		if err := client.Do(req, &ctx.Response); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadGateway)
		}
	}
	log.Fatal(fasthttp.ListenAndServe(*listen, handler))
}
