package apigw

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/mrlb/mrlb/shared/model"
)

// keyring checks API keys. Keys are kept only as SHA-256 digests, which
// have a fixed length, so the comparison reveals neither a key nor its
// length, and the raw keys never sit in memory for a log line to pick up.
type keyring struct {
	digests [][sha256.Size]byte
}

func newKeyring(keys []string) *keyring {
	k := &keyring{}
	for _, key := range keys {
		k.digests = append(k.digests, sha256.Sum256([]byte(key)))
	}
	return k
}

// enabled reports whether requests need a key at all.
func (k *keyring) enabled() bool { return len(k.digests) > 0 }

// match returns a stable, non-secret id of the key in the Authorization
// header value, or ok=false. Every configured key is compared, without an
// early exit, so timing does not tell which key (or whether any) matched.
func (k *keyring) match(header string) (id string, ok bool) {
	token, found := bearerToken(header)
	if !found {
		return "", false
	}
	d := sha256.Sum256([]byte(token))
	matched := 0
	idx := 0
	for i := range k.digests {
		eq := subtle.ConstantTimeCompare(d[:], k.digests[i][:])
		idx = subtle.ConstantTimeSelect(eq, i, idx)
		matched |= eq
	}
	if matched != 1 {
		return "", false
	}
	// The id is a short digest prefix: enough to tell clients apart in the
	// rate limiter, useless for recovering the key.
	return "key:" + hex.EncodeToString(k.digests[idx][:6]), true
}

// bearerToken extracts the token of "Bearer <token>" (scheme is
// case-insensitive, as RFC 9110 says).
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

var (
	errNoCredentials  = &model.Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "missing credentials: send Authorization: Bearer <API key>"}
	errBadCredentials = &model.Error{Status: http.StatusUnauthorized, Code: "invalid_credentials", Message: "invalid API key"}
)
