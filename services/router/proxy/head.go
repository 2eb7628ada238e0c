package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// This file is the event loop's HTTP/1.1 framing: a strict parser for the
// request and response heads it proxies itself, and the writers of the heads
// it sends on. Anything it is not sure of (another version, absolute-form
// targets, Transfer-Encoding or Upgrade on a request, obs-fold, odd bytes)
// makes parseRequest answer headHandoff, and the connection is served by the
// fasthttp path from then on, which has the full parser. Strictness here is
// what keeps request smuggling out: the router and the region must agree on
// where every request ends.

// headStatus is what a parse found.
type headStatus uint8

const (
	headIncomplete headStatus = iota // need more bytes
	headOK
	headHandoff // valid or not, the fasthttp path must judge it
	headInvalid // not valid framing: a region's answer is a 502
	headBad     // a request the router refuses (reqHead.bad says how)
)

// maxHeaders bounds the headers of a request the event loop handles (more
// go to the fasthttp path); maxRespHeaders those of a region's answer.
const (
	maxHeaders     = 64
	maxRespHeaders = 256
)

type span struct{ lo, hi int32 }

func (s span) of(b []byte) []byte { return b[s.lo:s.hi] }

type header struct{ name, value span }

// reqHead is a parsed request head; spans index the buffer it was parsed
// from, which stays put until the request is answered.
type reqHead struct {
	end           int // bytes of the head, CRLFCRLF included
	bad           int // with headBad: 400, 414 or 431
	method        span
	uri           span
	host          span
	contentLength int64
	hdrs          [maxHeaders]header
	nh            int
	close         bool // the client asked to close after the answer
	idempotent    bool
	head          bool
}

// respHead is a parsed response head.
type respHead struct {
	end           int
	status        int
	reason        span // "200 OK": code and reason phrase
	contentLength int64
	hdrs          [maxRespHeaders]header
	nh            int
	connNames     bool // the region's Connection header names headers to drop
	chunked       bool
	te            bool
	close         bool
	http10        bool
	keepAlive     bool // HTTP/1.0 with Connection: keep-alive
}

func isTokenChar(c byte) bool { return tokenTable[c] }

var tokenTable = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		t[c] = true
	}
	return t
}()

// isValueChar: visible ASCII, space, tab and obs-text; no controls.
func isValueChar(c byte) bool { return c == '\t' || (c >= 0x20 && c != 0x7f) }

// isRespValueChar is what a region's header value may hold: anything but
// CR, LF and NUL (clients judge the rest; the router only relays it).
func isRespValueChar(c byte) bool { return c != '\r' && c != '\n' && c != 0 }

// line finds the line starting at i: its end (without CR LF) and the start
// of the next line; end is -1 when the line is incomplete, -2 for a bare LF
// (not valid framing, from a client or a region).
func line(b []byte, i int) (end, next int) {
	j := bytes.IndexByte(b[i:], '\n')
	if j < 0 {
		return -1, 0
	}
	j += i
	if j > i && b[j-1] == '\r' {
		return j - 1, j + 1
	}
	return -2, 0
}

// parseHeaders reads header lines from i into hdrs until the empty line; it
// returns the head's end, headInvalid when a line is not a header, or full
// when there are more headers than hdrs holds. A region's header values
// (resp) may hold any byte but CR, LF and NUL.
func parseHeaders(b []byte, i int, hdrs []header, nh *int, full headStatus, resp bool) (int, headStatus) {
	for {
		e, next := line(b, i)
		switch e {
		case -1:
			return 0, headIncomplete
		case -2:
			return 0, headInvalid
		}
		if e == i {
			return next, headOK
		}
		if *nh == len(hdrs) {
			return 0, full
		}
		// name ":" OWS value OWS
		n := i
		for n < e && isTokenChar(b[n]) {
			n++
		}
		if n == i || n == e || b[n] != ':' {
			return 0, headInvalid // empty name, space before colon, obs-fold
		}
		v := n + 1
		for v < e && (b[v] == ' ' || b[v] == '\t') {
			v++
		}
		ve := e
		for ve > v && (b[ve-1] == ' ' || b[ve-1] == '\t') {
			ve--
		}
		for k := v; k < ve; k++ {
			if !isValueChar(b[k]) && (!resp || !isRespValueChar(b[k])) {
				return 0, headInvalid
			}
		}
		hdrs[*nh] = header{name: span{int32(i), int32(n)}, value: span{int32(v), int32(ve)}}
		*nh++
		i = next
	}
}

// parseContentLength reads a Content-Length value: digits only, bounded.
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func eqFold(a []byte, b string) bool {
	return len(a) == len(b) && bytes.EqualFold(a, []byte(b))
}

// tokens calls fn with each comma-separated, trimmed token of v.
func tokens(v []byte, fn func(tok []byte) bool) bool {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		tok = trimOWS(tok)
		if len(tok) > 0 && !fn(tok) {
			return false
		}
	}
	return true
}

// trimOWS trims HTTP's optional whitespace (space and tab, nothing else).
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// parseRequest parses the request head at the start of b. What is not
// valid HTTP/1.1 framing is headBad (r.bad: 400, or 414 for a request line
// over maxTarget); what is valid but not for the event loop is headHandoff.
func parseRequest(b []byte, r *reqHead) headStatus {
	bad := func(status int) headStatus {
		r.bad = status
		return headBad
	}
	e, next := line(b, 0)
	switch e {
	case -1:
		// Incomplete: as soon as the target must be too long (the method
		// and version are bounded), whatever comes.
		if m := bytes.IndexByte(b, ' '); m > maxMethod || (m < 0 && len(b) > maxMethod) {
			return bad(400)
		}
		if len(b) > maxMethod+maxTarget+len("  HTTP/1.1\r") {
			return bad(414)
		}
		return headIncomplete
	case -2:
		return bad(400)
	}
	// method SP origin-form SP HTTP/1.1
	m := 0
	for m < e && isTokenChar(b[m]) {
		m++
	}
	if m == 0 || m > maxMethod || m >= e || b[m] != ' ' {
		return bad(400)
	}
	u := m + 1
	ue := u
	for ue < e && b[ue] > 0x20 && b[ue] < 0x7f {
		ue++
	}
	if ue == u || ue == e || b[ue] != ' ' {
		return bad(400)
	}
	if ue-u > maxTarget {
		return bad(414)
	}
	switch string(b[ue+1 : e]) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		return headHandoff
	default:
		return bad(400)
	}
	if b[u] != '/' {
		return headHandoff // absolute-form, authority-form, "*": the general path judges
	}
	*r = reqHead{method: span{0, int32(m)}, uri: span{int32(u), int32(ue)}, contentLength: -1}
	end, st := parseHeaders(b, next, r.hdrs[:], &r.nh, headHandoff, false)
	switch st {
	case headOK:
	case headInvalid:
		return bad(400)
	default:
		return st
	}
	r.end = end
	hosts := 0
	for i := range r.nh {
		h := &r.hdrs[i]
		name, val := h.name.of(b), h.value.of(b)
		switch len(name) {
		case 4:
			if eqFold(name, "host") {
				hosts++
				r.host = h.value
				if !validHost(val) {
					return bad(400)
				}
			}
		case 6:
			if eqFold(name, "expect") {
				return headHandoff
			}
		case 7:
			// Trailer announces fields after a chunked body; on a request the
			// loop would carry it is unusual, so the general path judges it.
			if eqFold(name, "upgrade") || eqFold(name, "trailer") {
				return headHandoff
			}
		case 10:
			if eqFold(name, "connection") {
				if !tokens(val, func(tok []byte) bool {
					switch {
					case eqFold(tok, "close"):
						r.close = true
					case eqFold(tok, "keep-alive"):
					default:
						return false // names a header to drop, or upgrade
					}
					return true
				}) {
					return headHandoff
				}
			}
		case 14:
			if eqFold(name, "content-length") {
				n, ok := parseContentLength(val)
				if !ok || r.contentLength >= 0 {
					return bad(400)
				}
				r.contentLength = n
			}
		case 17:
			if eqFold(name, "transfer-encoding") {
				return headHandoff
			}
		}
	}
	if hosts != 1 {
		return bad(400)
	}
	method := r.method.of(b)
	switch string(method) {
	case "GET", "PUT", "DELETE", "OPTIONS", "TRACE":
		r.idempotent = true
	case "HEAD":
		r.idempotent, r.head = true, true
	}
	return headOK
}

// appendRequest writes the request as it goes to up: the endpoint's path
// prefix, Host = the region's host, hop-by-hop and client-sent forwarding
// headers dropped, the client's forwarding headers replaced by the
// router's X-Forwarded-* (proto: "http" or "https"); the body follows
// unchanged.
func appendRequest(dst, b []byte, r *reqHead, host, prefix string, client []byte, proto string) []byte {
	dst = append(dst, r.method.of(b)...)
	dst = append(dst, ' ')
	dst = append(dst, prefix...)
	dst = append(dst, r.uri.of(b)...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	dst = append(dst, "\r\n"...)
	for i := range r.nh {
		h := &r.hdrs[i]
		name := h.name.of(b)
		if isHopHeader(name) || isForwardingHeader(name) || eqFold(name, "host") {
			continue
		}
		dst = appendHeader(dst, name, h.value.of(b))
	}
	dst = append(dst, "X-Forwarded-For: "...)
	dst = append(dst, client...)
	dst = append(dst, "\r\nX-Forwarded-Host: "...)
	dst = append(dst, r.host.of(b)...)
	dst = append(dst, "\r\nX-Forwarded-Proto: "...)
	dst = append(dst, proto...)
	return append(dst, "\r\n\r\n"...)
}

var headerSTS = []byte("Strict-Transport-Security")

func appendHeader(dst, name, value []byte) []byte {
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	dst = append(dst, value...)
	return append(dst, "\r\n"...)
}

// isForwardingHeader reports a header that tells a region who the client
// is: a client's own values are never passed on (the router sets
// X-Forwarded-*), whatever the case or with '_' for '-'.
func isForwardingHeader(name []byte) bool {
	switch len(name) {
	case 9:
		return eqFoldDash(name, "forwarded") || eqFoldDash(name, "x-real-ip")
	case 14:
		return eqFoldDash(name, "true-client-ip")
	case 15:
		return eqFoldDash(name, "x-forwarded-for")
	case 16:
		return eqFoldDash(name, "x-forwarded-host") || eqFoldDash(name, "x-forwarded-port")
	case 17:
		return eqFoldDash(name, "x-forwarded-proto")
	}
	return false
}

// eqFoldDash compares name with lower-case s, in any case and with '_'
// standing for '-'.
func eqFoldDash(name []byte, s string) bool {
	if len(name) != len(s) {
		return false
	}
	for i, c := range name {
		if c == '_' {
			c = '-'
		} else if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// parseResponse parses a region's response head at the start of b.
func parseResponse(b []byte, r *respHead) headStatus {
	e, next := line(b, 0)
	switch e {
	case -1:
		return headIncomplete
	case -2:
		return headInvalid
	}
	// HTTP/1.x SP 3DIGIT [SP reason]
	if e < 12 || string(b[:7]) != "HTTP/1." || (b[7] != '1' && b[7] != '0') || b[8] != ' ' {
		return headInvalid
	}
	status := 0
	for _, c := range b[9:12] {
		if c < '0' || c > '9' {
			return headInvalid
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 || (e > 12 && b[12] != ' ') {
		return headInvalid
	}
	for k := 12; k < e; k++ {
		if !isValueChar(b[k]) {
			return headInvalid
		}
	}
	*r = respHead{status: status, reason: span{9, int32(e)}, contentLength: -1, http10: b[7] == '0'}
	end, st := parseHeaders(b, next, r.hdrs[:], &r.nh, headInvalid, true)
	if st != headOK {
		return st
	}
	r.end = end
	for i := range r.nh {
		h := &r.hdrs[i]
		name, val := h.name.of(b), h.value.of(b)
		switch len(name) {
		case 10:
			if eqFold(name, "connection") {
				if !tokens(val, func(tok []byte) bool {
					switch {
					case eqFold(tok, "close"):
						r.close = true
					case eqFold(tok, "keep-alive"):
						r.keepAlive = true
					case eqFold(tok, "content-length"), eqFold(tok, "transfer-encoding"):
						// The body is relayed in the region's framing, so its
						// framing header stays whatever Connection says.
					default:
						r.connNames = true
					}
					return true
				}) {
					return headInvalid
				}
			}
		case 14:
			if eqFold(name, "content-length") {
				n, ok := parseContentLength(val)
				if !ok || (r.contentLength >= 0 && r.contentLength != n) {
					return headInvalid
				}
				r.contentLength = n
			}
		case 17:
			if eqFold(name, "transfer-encoding") {
				// The last coding of the list, over every field (empty
				// elements do not count), says whether it is chunked.
				r.te = true
				tokens(val, func(tok []byte) bool {
					r.chunked = eqFold(tok, "chunked")
					return true
				})
			}
		}
	}
	if r.te {
		r.contentLength = -1 // Transfer-Encoding overrides Content-Length
	}
	return headOK
}

// bodyless reports a response that has no body whatever its headers say.
func (r *respHead) bodyless(head bool) bool {
	return head || r.status < 200 || r.status == 204 || r.status == 304
}

// reusable reports whether the region's connection may carry another
// request after this response (which must be framed, not close-delimited).
func (r *respHead) reusable() bool {
	if r.close || (r.http10 && r.te) { // HTTP/1.0 with Transfer-Encoding: faulty framing
		return false
	}
	return !r.http10 || r.keepAlive
}

// appendResponse writes the region's response head as the client gets it:
// hop-by-hop headers dropped (Transfer-Encoding kept, the body is relayed
// in the region's framing), X-LB-Region set, Connection: close if asked,
// and hsts, when set, as the Strict-Transport-Security value (the region's
// own dropped).
func appendResponse(dst, b []byte, r *respHead, region string, closeConn bool, hsts []byte) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = append(dst, r.reason.of(b)...)
	dst = append(dst, "\r\n"...)
	for i := range r.nh {
		h := &r.hdrs[i]
		name := h.name.of(b)
		if isHopHeader(name) {
			if !r.te || !eqFold(name, "transfer-encoding") {
				continue
			}
		}
		if (r.te && eqFold(name, "content-length")) || eqFold(name, "x-lb-region") || r.named(b, name) ||
			(len(hsts) > 0 && eqFold(name, "strict-transport-security")) {
			continue
		}
		dst = appendHeader(dst, name, h.value.of(b))
	}
	if len(hsts) > 0 {
		dst = appendHeader(dst, headerSTS, hsts)
	}
	dst = append(dst, "X-LB-Region: "...)
	dst = append(dst, region...)
	if closeConn {
		dst = append(dst, "\r\nConnection: close"...)
	}
	return append(dst, "\r\n\r\n"...)
}

// named reports whether the region's Connection header listed name (other
// than the framing headers, which are kept).
func (r *respHead) named(b, name []byte) bool {
	if !r.connNames || eqFold(name, "content-length") || eqFold(name, "transfer-encoding") {
		return false
	}
	for i := range r.nh {
		h := &r.hdrs[i]
		if !eqFold(h.name.of(b), "connection") {
			continue
		}
		found := false
		tokens(h.value.of(b), func(tok []byte) bool {
			found = bytes.EqualFold(tok, name)
			return !found
		})
		if found {
			return true
		}
	}
	return false
}

// appendError writes one of the router's own JSON error answers (without
// the body when it answers a HEAD).
func appendError(dst []byte, status int, region string, body []byte, closeConn, head bool) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = appendInt(dst, int64(status))
	dst = append(dst, ' ')
	dst = append(dst, fasthttp.StatusMessage(status)...)
	dst = append(dst, "\r\nContent-Type: application/json\r\n"...)
	if region != "" {
		dst = append(dst, "X-LB-Region: "...)
		dst = append(dst, region...)
		dst = append(dst, "\r\n"...)
	}
	if closeConn {
		dst = append(dst, "Connection: close\r\n"...)
	}
	dst = append(dst, "Content-Length: "...)
	dst = appendInt(dst, int64(len(body)))
	dst = append(dst, "\r\n\r\n"...)
	if head {
		return dst
	}
	return append(dst, body...)
}

func appendInt(dst []byte, n int64) []byte {
	var a [20]byte
	i := len(a)
	for {
		i--
		a[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(dst, a[i:]...)
}

// chunkScanner follows a chunked body byte by byte to find where it ends;
// the bytes themselves are relayed unchanged, so it accepts only strict
// framing: CRLF line ends, chunk extensions without controls, and trailer
// lines that are header fields (a bare LF there could end the body early
// for a client and turn the bytes after it into a second response).
type chunkScanner struct {
	state uint8
	size  int64 // the chunk's size, or the trailer section's length so far
	digit bool
}

// maxTrailers bounds a chunked body's trailer section.
const maxTrailers = 16 << 10

const (
	csSize uint8 = iota
	csSizeBWS
	csExt
	csSizeLF
	csData
	csDataCR
	csDataLF
	csTrailerStart
	csTrailerName
	csTrailer
	csTrailerLF
	csFinalLF
	csDone
)

// scan consumes b and returns how many of its bytes belong to the body, and
// whether the body ended there; ok is false for a malformed body.
func (s *chunkScanner) scan(b []byte) (n int, done, ok bool) {
	for n < len(b) {
		c := b[n]
		if s.state >= csTrailerStart {
			if s.size++; s.size > maxTrailers {
				return n, false, false
			}
		}
		switch s.state {
		case csSize:
			switch {
			case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
				if s.size > 1<<40 {
					return n, false, false
				}
				s.size = s.size<<4 | int64(hexVal(c))
				s.digit = true
			case c == ';' && s.digit:
				s.state = csExt
			case (c == ' ' || c == '\t') && s.digit:
				s.state = csSizeBWS
			case c == '\r' && s.digit:
				s.state = csSizeLF
			default:
				return n, false, false
			}
		case csSizeBWS: // whitespace after the size: then only ';' or CR
			switch c {
			case ' ', '\t':
			case ';':
				s.state = csExt
			case '\r':
				s.state = csSizeLF
			default:
				return n, false, false
			}
		case csExt:
			switch {
			case c == '\r':
				s.state = csSizeLF
			case !isValueChar(c):
				return n, false, false
			}
		case csSizeLF:
			if c != '\n' {
				return n, false, false
			}
			if s.size == 0 {
				s.state = csTrailerStart // s.size now counts trailer bytes
			} else {
				s.state = csData
			}
		case csData:
			k := int64(len(b) - n)
			if k > s.size {
				k = s.size
			}
			n += int(k)
			s.size -= k
			if s.size == 0 {
				s.state = csDataCR
			}
			continue
		case csDataCR:
			if c != '\r' {
				return n, false, false
			}
			s.state = csDataLF
		case csDataLF:
			if c != '\n' {
				return n, false, false
			}
			s.state, s.size, s.digit = csSize, 0, false
		case csTrailerStart:
			switch {
			case c == '\r':
				s.state = csFinalLF
			case isTokenChar(c):
				s.state = csTrailerName
			default:
				return n, false, false
			}
		case csTrailerName:
			switch {
			case c == ':':
				s.state = csTrailer
			case !isTokenChar(c):
				return n, false, false
			}
		case csTrailer:
			switch {
			case c == '\r':
				s.state = csTrailerLF
			case !isValueChar(c):
				return n, false, false
			}
		case csTrailerLF:
			if c != '\n' {
				return n, false, false
			}
			s.state = csTrailerStart
		case csFinalLF:
			if c != '\n' {
				return n, false, false
			}
			s.state = csDone
			return n + 1, true, true
		}
		n++
	}
	return n, false, true
}

func hexVal(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
