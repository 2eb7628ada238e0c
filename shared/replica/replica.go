// Package replica names a replica of a service, so that replicas of the
// same service can tell each other apart in KV keys, events and metrics.
package replica

import (
	"fmt"
	"os"
	"strings"
)

// DefaultID is hostname-pid shaped to the region-name rule
// (^[a-z0-9][a-z0-9-]{0,62}$), so it is a valid KV key and subject token. In
// a container the hostname is the container id, which is unique; fallback
// names the service when the hostname gives nothing usable.
func DefaultID(fallback string) string {
	host, _ := os.Hostname()
	var b strings.Builder
	for _, r := range strings.ToLower(host) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	name := strings.Trim(b.String(), "-")
	if name == "" {
		name = fallback
	}
	if len(name) > 40 {
		name = strings.TrimRight(name[:40], "-")
	}
	return fmt.Sprintf("%s-%d", name, os.Getpid())
}
