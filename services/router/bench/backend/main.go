// Command backend is the bench's region: a minimal HTTP server answering a
// small fixed body on each address given, so the proxies are what is measured.
package main

import (
	"fmt"
	"log"
	"os"
	"sync"

	"github.com/valyala/fasthttp"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: backend ADDR...")
	}
	var wg sync.WaitGroup
	for _, addr := range os.Args[1:] {
		body := []byte(fmt.Sprintf("hello from %s\n", addr))
		wg.Go(func() {
			s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
				ctx.SetContentType("text/plain")
				ctx.SetBody(body)
			}, NoDefaultServerHeader: true}
			if err := s.ListenAndServe(addr); err != nil {
				log.Fatal(err)
			}
		})
	}
	wg.Wait()
}
