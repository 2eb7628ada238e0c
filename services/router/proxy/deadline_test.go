package proxy

import (
	"net"
	"testing"
	"time"
)

func TestDeadlineConnCoalesces(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &deadlineConn{Conn: a, slack: time.Second}
	t0 := time.Now().Add(time.Hour)
	steps := []struct {
		t    time.Time
		want time.Time // deadline in force afterwards
	}{
		{t0, t0},                             // none before: applied
		{t0.Add(100 * time.Millisecond), t0}, // later by less than slack: kept
		{t0.Add(2 * time.Second), t0.Add(2 * time.Second)}, // later by more: applied
		{t0, t0},                   // earlier: applied
		{time.Time{}, time.Time{}}, // cleared: applied
		{time.Time{}, time.Time{}}, // cleared again: nothing to do
	}
	for i, s := range steps {
		if err := c.SetReadDeadline(s.t); err != nil {
			t.Fatal(err)
		}
		if !c.rd.Equal(s.want) {
			t.Fatalf("step %d: deadline %v, want %v", i, c.rd, s.want)
		}
	}
	// The deadline in force really fires.
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read returned without data before the deadline")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("want a timeout, got %v", err)
	}
}
