package proxy

import (
	"bytes"
	"errors"

	"github.com/valyala/fasthttp"
)

// Limits of a request head, the same on both paths (contract section 6).
const (
	// maxHead bounds the request line and headers: over it 431, or 414
	// when the request line alone is longer.
	maxHead = 16 << 10
	// maxTarget bounds the request target: over it 414.
	maxTarget = 8 << 10
	// maxMethod bounds a request method: over it 400.
	maxMethod = 32
	// maxClientHeaders bounds the header lines of a request: over it 431.
	maxClientHeaders = 256
)

// The router's own answers to requests it refuses.
var (
	bodyBadRequest   = []byte(`{"error":"the request is not valid HTTP/1.1","code":"bad_request"}`)
	bodyBadVersion   = []byte(`{"error":"only HTTP/1.1 and HTTP/1.0 are served here","code":"bad_request"}`)
	bodyBadHost      = []byte(`{"error":"the request needs exactly one non-empty Host header","code":"bad_request"}`)
	bodyBadFraming   = []byte(`{"error":"the request's Content-Length or Transfer-Encoding is not valid","code":"bad_request"}`)
	bodyBadTarget    = []byte(`{"error":"the request target is not valid here","code":"bad_request"}`)
	bodyBadBody      = []byte(`{"error":"the request body ended early or is malformed","code":"bad_request"}`)
	bodyTargetLong   = []byte(`{"error":"the request target is too long","code":"uri_too_long"}`)
	bodyHeadersLarge = []byte(`{"error":"the request headers are too large","code":"headers_too_large"}`)
	bodyClientSlow   = []byte(`{"error":"the request was not received in time","code":"request_timeout"}`)
)

// checkRequest judges a request head fasthttp accepted by the rules the
// event loop's parser applies (fasthttp is lenient: spaces in header names,
// obs-fold, any HTTP/1.x version, authority-form targets); a non-zero status
// refuses it, and the connection is closed.
func checkRequest(h *fasthttp.RequestHeader) (int, []byte) {
	proto := h.Protocol()
	http10 := string(proto) == "HTTP/1.0"
	if !http10 && string(proto) != "HTTP/1.1" {
		return fasthttp.StatusBadRequest, bodyBadVersion
	}
	method := h.Method()
	if len(method) == 0 || len(method) > maxMethod || !allTokens(method) || string(method) == "CONNECT" {
		return fasthttp.StatusBadRequest, bodyBadTarget
	}
	uri := h.RequestURI()
	switch {
	case len(uri) > maxTarget:
		return fasthttp.StatusRequestURITooLong, bodyTargetLong
	case len(uri) == 0:
		return fasthttp.StatusBadRequest, bodyBadTarget
	case uri[0] == '/':
	case string(uri) == "*":
		if string(method) != "OPTIONS" {
			return fasthttp.StatusBadRequest, bodyBadTarget
		}
	case hasPrefixFold(uri, "http://"), hasPrefixFold(uri, "https://"):
	default:
		return fasthttp.StatusBadRequest, bodyBadTarget
	}
	for _, c := range uri {
		if c <= 0x20 || c >= 0x7f {
			return fasthttp.StatusBadRequest, bodyBadTarget
		}
	}
	raw := h.RawHeaders()
	var hdrs [maxClientHeaders]header
	nh := 0
	switch _, st := parseHeaders(raw, 0, hdrs[:], &nh, headHandoff, false); st {
	case headOK:
	case headHandoff:
		return fasthttp.StatusRequestHeaderFieldsTooLarge, bodyHeadersLarge
	default:
		return fasthttp.StatusBadRequest, bodyBadRequest
	}
	hosts, cls, tes := 0, 0, 0
	for i := range nh {
		name, val := hdrs[i].name.of(raw), hdrs[i].value.of(raw)
		switch {
		case eqFold(name, "host"):
			hosts++
			if !validHost(val) {
				return fasthttp.StatusBadRequest, bodyBadHost
			}
		case eqFold(name, "content-length"):
			cls++
			if _, ok := parseContentLength(val); !ok {
				return fasthttp.StatusBadRequest, bodyBadFraming
			}
		case eqFold(name, "transfer-encoding"):
			tes++
			if !eqFold(val, "chunked") {
				return fasthttp.StatusBadRequest, bodyBadFraming
			}
		}
	}
	switch {
	case hosts > 1, hosts == 0 && !http10:
		return fasthttp.StatusBadRequest, bodyBadHost
	case cls > 1, tes > 1, cls > 0 && tes > 0, tes > 0 && http10:
		return fasthttp.StatusBadRequest, bodyBadFraming
	}
	return 0, nil
}

func allTokens(b []byte) bool {
	for _, c := range b {
		if !isTokenChar(c) {
			return false
		}
	}
	return true
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && bytes.EqualFold(b[:len(prefix)], []byte(prefix))
}

// validHost: a non-empty host[:port] (or [v6]:port) without whitespace or
// delimiters that would let it name a path or user.
func validHost(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	for _, c := range v {
		if !isTokenChar(c) && c != ':' && c != '[' && c != ']' {
			return false
		}
	}
	return true
}

// parseError is the fasthttp server's answer to a head it could not read:
// 431 (414 when the request line alone filled the buffer), 408 on a head
// not received in time, else 400; fasthttp closes the connection after it.
func (p *Proxy) parseError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.As(err, &small):
		if cc, ok := ctx.Conn().(*clientConn); ok && cc.lineLen >= maxHead {
			p.refuse(ctx, fasthttp.StatusRequestURITooLong, bodyTargetLong)
			return
		}
		p.refuse(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, bodyHeadersLarge)
	case isTimeout(err):
		p.refuse(ctx, fasthttp.StatusRequestTimeout, bodyClientSlow)
	default:
		p.refuse(ctx, fasthttp.StatusBadRequest, bodyBadRequest)
	}
}

// refuse answers a request the router will not serve and closes the
// connection: after a bad head or body the stream cannot be trusted.
func (p *Proxy) refuse(ctx *fasthttp.RequestCtx, status int, body []byte) {
	p.m.Refused.Inc()
	writeError(ctx, nil, status, body)
	ctx.SetConnectionClose()
}

// refuseBody answers a request whose body failed on the client's side:
// 408 when the client was too slow, else 400.
func (p *Proxy) refuseBody(ctx *fasthttp.RequestCtx, err error) {
	if isTimeout(err) {
		p.refuse(ctx, fasthttp.StatusRequestTimeout, bodyClientSlow)
		return
	}
	p.refuse(ctx, fasthttp.StatusBadRequest, bodyBadBody)
}

// headerReceived gives a request with a body the body timeout for the byte
// fasthttp reads ahead; the rest is read under clientConn's per-read timeout.
func (p *Proxy) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if cl := h.ContentLength(); cl == 0 || cl == -2 {
		return fasthttp.RequestConfig{}
	}
	return fasthttp.RequestConfig{ReadTimeout: p.opts.ClientBodyTimeout}
}
