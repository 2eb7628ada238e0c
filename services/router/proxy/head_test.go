package proxy

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want headStatus
	}{
		{"plain", "GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n", headOK},
		{"body", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", headOK},
		{"incomplete", "GET / HTTP/1.1\r\nHost: x\r\n", headIncomplete},
		{"incomplete line", "GET / HT", headIncomplete},
		{"http/1.0", "GET / HTTP/1.0\r\nHost: x\r\n\r\n", headHandoff},
		{"absolute form", "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", headHandoff},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", headHandoff},
		{"no host", "GET / HTTP/1.1\r\n\r\n", headBad},
		{"two hosts", "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", headBad},
		{"transfer-encoding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", headHandoff},
		{"te and cl", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", headHandoff},
		{"two lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", headBad},
		{"signed length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n", headBad},
		{"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", headBad},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  2\r\n\r\n", headBad},
		{"bare lf", "GET / HTTP/1.1\nHost: x\n\n", headBad},
		{"bare lf in headers", "GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", headBad},
		{"nul in value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", headBad},
		{"upgrade", "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", headHandoff},
		{"connection names a header", "GET / HTTP/1.1\r\nHost: x\r\nConnection: X-Secret\r\n\r\n", headHandoff},
		{"expect", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n", headHandoff},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", headBad},
		{"lowercase version", "GET / http/1.1\r\nHost: x\r\n\r\n", headBad},
		{"empty host", "GET / HTTP/1.1\r\nHost: \r\n\r\n", headBad},
		{"host with a path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", headBad},
		{"http/1.2", "GET / HTTP/1.2\r\nHost: x\r\n\r\n", headBad},
		{"http/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", headBad},
		{"space in name", "GET / HTTP/1.1\r\nHost: x\r\nContent Length: 5\r\n\r\n", headBad},
		{"empty name", "GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", headBad},
		{"no target", "GET  HTTP/1.1\r\nHost: x\r\n\r\n", headBad},
		{"connect", "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", headHandoff},
		{"long target", "GET /" + strings.Repeat("a", maxTarget) + " HTTP/1.1\r\nHost: x\r\n\r\n", headBad},
		{"long target incomplete", "GET /" + strings.Repeat("a", maxTarget+64), headBad},
		{"long method", strings.Repeat("A", maxMethod+1) + " / HTTP/1.1\r\nHost: x\r\n\r\n", headBad},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r reqHead
			if got := parseRequest([]byte(tc.in), &r); got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
			wantBad := 0
			if tc.want == headBad {
				wantBad = 400
				if strings.HasPrefix(tc.name, "long target") {
					wantBad = 414
				}
			}
			if r.bad != wantBad {
				t.Fatalf("refused with %d, want %d", r.bad, wantBad)
			}
		})
	}
}

func TestAppendRequestRewrites(t *testing.T) {
	in := []byte("POST /p?q=1 HTTP/1.1\r\nhost: front\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\n" +
		"Forwarded: for=1.1.1.1\r\nX-Real-IP: 1.1.1.1\r\nTrue-Client-IP: 1.1.1.1\r\nX_Forwarded_For: 1.1.1.1\r\nx_forwarded_proto: https\r\n" +
		"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nConnection: keep-alive, close\r\nKeep-Alive: 5\r\n" +
		"Te: trailers\r\nProxy-Authorization: x\r\nX-Keep: v \r\nContent-Length: 3\r\n\r\nabc")
	var r reqHead
	if st := parseRequest(in, &r); st != headOK {
		t.Fatalf("status %d", st)
	}
	if !r.close || r.idempotent || r.contentLength != 3 || r.end != len(in)-3 {
		t.Fatalf("parsed %+v", r)
	}
	got := string(appendRequest(nil, in, &r, "region:8080", "/base", []byte("127.0.0.1"), "http"))
	want := "POST /base/p?q=1 HTTP/1.1\r\nHost: region:8080\r\nX-Keep: v\r\nContent-Length: 3\r\n" +
		"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Host: front\r\nX-Forwarded-Proto: http\r\n\r\n"
	if got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}

func TestParseResponse(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		want    headStatus
		cl      int64
		chunked bool
		reuse   bool
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", headOK, 5, false, true},
		{"no reason", "HTTP/1.1 204\r\n\r\n", headOK, -1, false, true},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", headOK, -1, true, true},
		{"te overrides cl", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n", headOK, -1, true, true},
		{"close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", headOK, 0, false, false},
		{"http/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", headOK, 1, false, false},
		{"http/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", headOK, 1, false, true},
		{"same length twice", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", headOK, 2, false, true},
		{"different lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", headInvalid, 0, false, false},
		{"garbage", "HTTX/1.1 200 OK\r\n\r\n", headInvalid, 0, false, false},
		{"bad code", "HTTP/1.1 2x0 OK\r\n\r\n", headInvalid, 0, false, false},
		{"incomplete", "HTTP/1.1 200 OK\r\nContent-Len", headIncomplete, 0, false, false},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", headInvalid, 0, false, false},
		{"bare lf", "HTTP/1.1 200 OK\nContent-Length: 1\n\n", headInvalid, 0, false, false},
		{"bare lf in headers", "HTTP/1.1 200 OK\r\nX: 1\nContent-Length: 1\r\n\r\n", headInvalid, 0, false, false},
		{"control byte in value", "HTTP/1.1 200 OK\r\nX: a\x01b\r\nContent-Length: 1\r\n\r\n", headOK, 1, false, true},
		{"nul in value", "HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n", headInvalid, 0, false, false},
		{"many headers", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-A: 1\r\n", 200) + "Content-Length: 1\r\n\r\n", headOK, 1, false, true},
		{"connection names length", "HTTP/1.1 200 OK\r\nConnection: Content-Length, a, b, c, d, e, f, g, h, i\r\nContent-Length: 1\r\n\r\n", headOK, 1, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r respHead
			got := parseResponse([]byte(tc.in), &r)
			if got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
			if got != headOK {
				return
			}
			if r.contentLength != tc.cl || r.chunked != tc.chunked || r.reusable() != tc.reuse {
				t.Fatalf("cl %d chunked %v reusable %v", r.contentLength, r.chunked, r.reusable())
			}
		})
	}
}

func TestAppendResponseRewrites(t *testing.T) {
	in := []byte("HTTP/1.1 200 OK\r\nx-custom-lower: v\r\nConnection: X-Drop, keep-alive\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\n" +
		"X-LB-Region: spoofed\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\nUpgrade: h2c\r\n\r\n")
	var r respHead
	if st := parseResponse(in, &r); st != headOK {
		t.Fatalf("status %d", st)
	}
	got := string(appendResponse(nil, in, &r, "eu", true, nil))
	want := "HTTP/1.1 200 OK\r\nx-custom-lower: v\r\nTransfer-Encoding: chunked\r\nX-LB-Region: eu\r\nConnection: close\r\n\r\n"
	if got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}

// A Connection header cannot take the framing header away from a body the
// router relays in that framing.
func TestAppendResponseKeepsFraming(t *testing.T) {
	in := []byte("HTTP/1.1 200 OK\r\nConnection: Content-Length, Transfer-Encoding, X-A\r\nX-A: 1\r\nContent-Length: 3\r\n\r\n")
	var r respHead
	if st := parseResponse(in, &r); st != headOK {
		t.Fatalf("status %d", st)
	}
	got := string(appendResponse(nil, in, &r, "eu", false, nil))
	want := "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-LB-Region: eu\r\n\r\n"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestChunkScanner(t *testing.T) {
	body := "4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: t\r\n\r\n"
	after := "HTTP/1.1 200 OK\r\n"
	// Whole, and split at every byte: the end is found at the same place.
	for split := 0; split <= len(body); split++ {
		var s chunkScanner
		in := body + after
		n1, done1, ok1 := s.scan([]byte(in[:split]))
		if !ok1 {
			t.Fatalf("split %d: malformed", split)
		}
		if done1 != (split == len(body)) {
			t.Fatalf("split %d: done=%v", split, done1)
		}
		if done1 {
			continue
		}
		n2, done2, ok2 := s.scan([]byte(in[split:]))
		if !ok2 || !done2 || n1+n2 != len(body) {
			t.Fatalf("split %d: n=%d done=%v ok=%v, want n=%d", split, n1+n2, done2, ok2, len(body))
		}
	}
	var s chunkScanner
	for i := range len(body) { // byte at a time
		n, done, ok := s.scan([]byte{body[i]})
		if !ok || n != 1 || done != (i == len(body)-1) {
			t.Fatalf("byte %d: n=%d done=%v ok=%v", i, n, done, ok)
		}
	}
	for _, bad := range []string{"x\r\n", "\r\n", "4\r\nabcdX\r\n", "4\nabcd\r\n", "1\r\na\r\n0\r\n\rX", strings.Repeat("f", 20) + "\r\n",
		"ZZZ\r\n", "0x3\r\nabc\r\n", "ffffffffffffffff1\r\n", "3;a\x01\r\nabc\r\n",
		// Trailers are header lines: a bare LF would end the body early
		// for a client that accepts it and smuggle a second response.
		"0\r\nX-T: a\n\r\nHTTP/1.1 200 OK\r\n", "0\r\nX T: a\r\n\r\n", "0\r\n: a\r\n\r\n",
		"0\r\nX-T: a\x00\r\n\r\n", "0\r\n" + strings.Repeat("X-T: aaaaaaaaaaaaaaaa\r\n", 1000) + "\r\n"} {
		var s chunkScanner
		if _, _, ok := s.scan([]byte(bad)); ok {
			t.Fatalf("%q: accepted", bad)
		}
	}
}

func TestAppendError(t *testing.T) {
	if got := appendError(nil, 503, "eu", bodyNoAnswer, false, true); bytes.Contains(got, bodyNoAnswer) {
		t.Fatalf("answer to HEAD has a body: %q", got)
	}
	got := appendError(nil, 503, "eu", bodyNoAnswer, true, false)
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nX-LB-Region: eu\r\nConnection: close\r\nContent-Length: ")) ||
		!bytes.HasSuffix(got, append([]byte("\r\n\r\n"), bodyNoAnswer...)) {
		t.Fatalf("%q", got)
	}
}
