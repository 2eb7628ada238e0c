package bus

import (
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/shared/model"
)

// IsWrongRevision reports a KV create or compare-and-swap that another
// writer won (the key exists, or its revision moved on): the caller reads
// again and retries.
func IsWrongRevision(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Unavailable turns a NATS failure into the typed 503 the API answers.
func Unavailable(err error) error {
	return model.Unavailable("NATS: %v", err)
}
