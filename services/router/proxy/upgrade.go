package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/mrlb/mrlb/services/router/table"
)

// maxUpgradeHead bounds the response head of an upgrade answer.
const maxUpgradeHead = 64 << 10

// serveUpgrade passes a protocol upgrade (WebSocket) through: the request
// goes to a region on a connection of its own; on 101 the client connection
// is hijacked and bytes are copied both ways until either side closes.
func (p *Proxy) serveUpgrade(ctx *fasthttp.RequestCtx) {
	snap := p.table.Snapshot()
	up := snap.Pick()
	if up == nil {
		p.m.NoRegion.Inc()
		writeError(ctx, nil, fasthttp.StatusServiceUnavailable, bodyNoRegion)
		return
	}
	if snap.Panic {
		p.notePanic(snap)
	}
	p.budget.Request(time.Now())
	in := &ctx.Request
	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	in.Header.CopyTo(&out.Header)
	upgrade := append([]byte(nil), in.Header.Peek("Upgrade")...)
	stripRequestHop(&out.Header, &in.Header)
	out.Header.SetProtocolBytes(strHTTP11)
	out.Header.Set("Connection", "Upgrade")
	out.Header.SetBytesV("Upgrade", upgrade)
	setForwarded(ctx, &out.Header)
	uri := requestURI(in)

	var tried [maxAttempts]*table.Upstream
	n := 0
	var conn net.Conn
	for {
		tried[n] = up
		n++
		var err error
		conn, err = up.Client.Dial(up.Addr)
		if err == nil {
			break
		}
		if up.Metrics != nil {
			up.Metrics.Request(0)
		}
		p.failure(up)
		alt := p.alternative(snap, tried[:n], up, "connect")
		if alt == nil || n >= maxAttempts {
			p.m.NoRegion.Inc()
			writeError(ctx, up, fasthttp.StatusServiceUnavailable, bodyNoAnswer)
			return
		}
		up = alt
	}
	setTarget(&out.Header, up, uri)
	start := time.Now()
	_ = conn.SetDeadline(start.Add(p.opts.ResponseHeaderTimeout))
	bw := bufio.NewWriter(conn)
	err := out.Header.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	br := bufio.NewReader(conn)
	var head []byte
	status := 0
	if err == nil {
		head, status, err = readHead(br, upgrade)
	}
	if err != nil {
		_ = conn.Close()
		if up.Metrics != nil {
			up.Metrics.Request(0)
		}
		p.failure(up)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			writeError(ctx, up, fasthttp.StatusGatewayTimeout, bodyTimeout)
		case errors.Is(err, errBadResponse):
			writeError(ctx, up, fasthttp.StatusBadGateway, bodyBadRegion)
		default:
			writeError(ctx, up, fasthttp.StatusBadGateway, bodyBadGW)
		}
		return
	}
	_ = conn.SetDeadline(time.Time{})
	up.Latency.Observe(time.Since(start))
	if up.Metrics != nil {
		up.Metrics.Request(status)
	}
	up.Success()

	if status != fasthttp.StatusSwitchingProtocols {
		// The region refused the upgrade: relay its answer as a response.
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		err := resp.Read(bufio.NewReader(io.MultiReader(bytes.NewReader(head), io.LimitReader(br, 64<<20))))
		_ = conn.Close()
		if err != nil {
			writeError(ctx, up, fasthttp.StatusBadGateway, bodyBadRegion)
			return
		}
		resp.Header.CopyTo(&ctx.Response.Header)
		ctx.Response.Header.SetNoDefaultContentType(true)
		stripResponseHop(&ctx.Response.Header)
		ctx.Response.Header.DisableNormalizing()
		ctx.Response.Header.SetBytesK(headerRegion, up.Name)
		ctx.Response.SetBody(resp.Body())
		return
	}

	head = withRegion(head, up.Name)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		defer func() { _ = conn.Close() }()
		if !p.track(c, conn) {
			return
		}
		defer p.untrack(c, conn)
		_ = c.SetDeadline(time.Time{})
		if _, err := c.Write(head); err != nil {
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = io.Copy(conn, c)
			_ = closeWrite(conn)
		}()
		_, _ = io.Copy(c, br)
		_ = c.Close()
		_ = conn.Close()
		<-done
	})
}

// track registers an upgraded pair so Shutdown can close it; it refuses
// once shutdown has begun.
func (p *Proxy) track(client, region net.Conn) bool {
	p.hijackMu.Lock()
	defer p.hijackMu.Unlock()
	if p.closing {
		return false
	}
	p.hijackWG.Add(1)
	p.hijacked[client] = struct{}{}
	p.hijacked[region] = struct{}{}
	return true
}

func (p *Proxy) untrack(client, region net.Conn) {
	p.hijackMu.Lock()
	delete(p.hijacked, client)
	delete(p.hijacked, region)
	p.hijackMu.Unlock()
	p.hijackWG.Done()
}

// readHead reads a response head up to and including the blank line,
// skipping 1xx interim answers other than 101. A head that is not valid
// framing, or a 101 to another protocol than asked, is errBadResponse.
func readHead(br *bufio.Reader, asked []byte) ([]byte, int, error) {
	for {
		var head []byte
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return nil, 0, err
			}
			head = append(head, line...)
			if len(head) > maxUpgradeHead {
				return nil, 0, fmt.Errorf("%w: upgrade response head too large", errBadResponse)
			}
			if len(line) <= 2 && (len(line) == 1 || line[0] == '\r') {
				break
			}
		}
		var r respHead
		if parseResponse(head, &r) != headOK {
			return nil, 0, errBadResponse
		}
		if r.status >= 100 && r.status < 200 && r.status != fasthttp.StatusSwitchingProtocols {
			continue
		}
		if r.status == fasthttp.StatusSwitchingProtocols && !upgradeMatches(head, &r, asked) {
			return nil, 0, fmt.Errorf("%w: switched to another protocol than asked", errBadResponse)
		}
		return head, r.status, nil
	}
}

// withRegion is a 101 head as the client gets it: the region's own
// X-LB-Region replaced by the router's (readHead checked the head).
func withRegion(head []byte, region string) []byte {
	var r respHead
	_ = parseResponse(head, &r)
	out := make([]byte, 0, len(head)+len(region)+16)
	out = append(out, head[:bytes.IndexByte(head, '\n')+1]...)
	for i := range r.nh {
		if name := r.hdrs[i].name.of(head); !isRegionHeader(name) {
			out = appendHeader(out, name, r.hdrs[i].value.of(head))
		}
	}
	out = append(out, "X-LB-Region: "...)
	out = append(out, region...)
	return append(out, "\r\n\r\n"...)
}

// upgradeMatches reports whether a 101 answer switches to the protocol the
// client asked for (one of those in its Upgrade list).
func upgradeMatches(b []byte, r *respHead, asked []byte) bool {
	for i := range r.nh {
		if !eqFold(r.hdrs[i].name.of(b), "upgrade") {
			continue
		}
		got := r.hdrs[i].value.of(b)
		ok := false
		tokens(asked, func(tok []byte) bool {
			ok = bytes.EqualFold(bytes.TrimSpace(got), tok)
			return !ok
		})
		return ok
	}
	return false
}
