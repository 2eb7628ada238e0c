package rendezvous

import (
	"fmt"
	"testing"
)

func TestOwnerIsStableAndOrderIndependent(t *testing.T) {
	t.Parallel()
	a := []string{"m1", "m2", "m3"}
	b := []string{"m3", "m1", "m2"}
	for i := range 100 {
		k := fmt.Sprintf("region-%d", i)
		if Owner(k, a) != Owner(k, b) {
			t.Fatalf("owner of %s depends on member order", k)
		}
	}
	if Owner("x", nil) != "" {
		t.Fatal("no members must give no owner")
	}
}

func TestOnlyLeaversKeysMove(t *testing.T) {
	t.Parallel()
	all := []string{"m1", "m2", "m3", "m4"}
	rest := []string{"m1", "m2", "m4"}
	counts := map[string]int{}
	for i := range 4000 {
		k := fmt.Sprintf("region-%d", i)
		before, after := Owner(k, all), Owner(k, rest)
		counts[before]++
		if before != "m3" && before != after {
			t.Fatalf("%s moved from %s to %s although %s stayed", k, before, after, before)
		}
		if after == "m3" {
			t.Fatalf("%s assigned to the member that left", k)
		}
	}
	for m, c := range counts {
		if c < 800 || c > 1200 {
			t.Fatalf("uneven spread: %s has %d of 4000 (%v)", m, c, counts)
		}
	}
}
