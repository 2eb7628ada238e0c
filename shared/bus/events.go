package bus

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/shared/model"
)

// Publisher is the one method of jetstream.JetStream that events need.
type Publisher interface {
	Publish(ctx context.Context, subject string, data []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// PublishEvent publishes ev on subject through JetStream so that LB_EVENTS
// keeps it. msgID, when set, makes a retried publish of the same change a
// no-op (the stream's duplicate window), which is what keeps "exactly once".
func PublishEvent(ctx context.Context, js Publisher, subject string, ev model.Event, msgID string) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := js.Publish(ctx, subject, data, opts...); err != nil {
		return fmt.Errorf("publish %s on %s: %w", ev.Type, subject, err)
	}
	return nil
}
