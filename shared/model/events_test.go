package model_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mrlb/mrlb/shared/model"
)

func TestFailoverEventsAlwaysCarryToRegion(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b, err := json.Marshal(model.Event{Type: model.EventFailoverStarted, At: at, FromRegion: "a", Reason: model.ReasonUnhealthy})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"to_region":""`) || !strings.Contains(string(b), `"from_region":"a"`) || strings.Count(string(b), "to_region") != 1 {
		t.Fatalf("failover event %s", b)
	}
	b, _ = json.Marshal(model.Event{Type: model.EventHealthChanged, At: at, Region: "a", From: "healthy", To: "unhealthy"})
	if strings.Contains(string(b), "to_region") || !strings.Contains(string(b), `"type":"health.changed"`) {
		t.Fatalf("health event %s", b)
	}
	var back model.Event
	if err := json.Unmarshal(b, &back); err != nil || back.To != "unhealthy" || !back.At.Equal(at) {
		t.Fatalf("round trip %+v %v", back, err)
	}
}
