// Package rendezvous assigns keys to members by highest-random-weight
// hashing: every member that sees the same member list computes the same
// owner without talking to the others, and when a member joins or leaves
// only the keys it gains or loses move.
package rendezvous

import "hash/fnv"

// Owner returns the member with the highest score for key, or "" when there
// are no members. Ties (astronomically unlikely) go to the smaller name so
// the answer never depends on the order of members.
func Owner(key string, members []string) string {
	best, bestScore := "", uint64(0)
	for _, m := range members {
		s := Score(m, key)
		if best == "" || s > bestScore || (s == bestScore && m < best) {
			best, bestScore = m, s
		}
	}
	return best
}

// Score is member's weight for key.
func Score(member, key string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(member))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(key))
	return mix(h.Sum64())
}

// mix is the splitmix64 finaliser, so that similar names spread evenly.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
