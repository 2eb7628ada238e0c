package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/shared/model"
)

// Requester is the one method of *nats.Conn that Request needs.
type Requester interface {
	RequestMsgWithContext(ctx context.Context, msg *nats.Msg) (*nats.Msg, error)
}

// Request sends a command and decodes its reply into out. Errors are always
// *model.Error: the command's own typed error, or 503 when no replica
// answers or the request times out, so callers map them without guessing.
func Request(ctx context.Context, nc Requester, subject string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode %s request: %w", subject, err)
	}
	if st, ok := nc.(interface{ Status() nats.Status }); ok && st.Status() != nats.CONNECTED {
		// While reconnecting, a publish is buffered and sent once NATS is
		// back: the command would run after the caller was told 503.
		return model.Unavailable("NATS is not reachable")
	}
	reply, err := nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: subject, Data: body})
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return model.Unavailable("no service answers %s", subject)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return model.Unavailable("%s timed out", subject)
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrDisconnected):
		return model.Unavailable("NATS is not reachable")
	case err != nil:
		return model.Unavailable("%s: %v", subject, err)
	}
	if code := reply.Header.Get(micro.ErrorCodeHeader); code != "" {
		var e model.Error
		if json.Unmarshal(reply.Data, &e) != nil || e.Code == "" {
			st, _ := strconv.Atoi(code)
			e = model.Error{Status: st, Code: "error", Message: reply.Header.Get(micro.ErrorHeader)}
		}
		if e.Status == 0 {
			e.Status, _ = strconv.Atoi(code)
		}
		return &e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(reply.Data, out); err != nil {
		return fmt.Errorf("decode %s reply: %w", subject, err)
	}
	return nil
}

// HandlerFunc is the typed form of a command handler.
type HandlerFunc[Req, Resp any] func(ctx context.Context, req Req) (Resp, error)

// Handle adapts a typed handler to a micro endpoint: it decodes the request
// strictly (unknown fields are a 400), bounds it with timeout, and answers
// either the JSON result or the typed error.
func Handle[Req, Resp any](timeout time.Duration, fn HandlerFunc[Req, Resp]) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		var in Req
		if len(bytes.TrimSpace(r.Data())) > 0 {
			if err := model.DecodeStrict(r.Data(), &in); err != nil {
				respondError(r, model.Invalid("invalid_json", "invalid request body: %v", err))
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		out, err := fn(ctx, in)
		if err != nil {
			respondError(r, err)
			return
		}
		_ = r.RespondJSON(out)
	})
}

func respondError(r micro.Request, err error) {
	e := *model.AsError(err)
	if e.Status < 100 || e.Status > 599 {
		// Not an HTTP status: callers could not map it.
		e.Status = http.StatusInternalServerError
	}
	if e.Message == "" {
		e.Message = http.StatusText(e.Status)
	}
	body, _ := json.Marshal(&e)
	// micro refuses an empty description and then sends no reply at all, so
	// the requester would time out: Message is never empty here.
	_ = r.Error(strconv.Itoa(e.Status), e.Message, body)
}

// Counted counts each call of fn in commands (labels: command, result), the
// result being "ok" or the error's code, so every service reports its
// commands the same way.
func Counted[Req, Resp any](commands *prometheus.CounterVec, command string, fn HandlerFunc[Req, Resp]) HandlerFunc[Req, Resp] {
	return func(ctx context.Context, req Req) (Resp, error) {
		resp, err := fn(ctx, req)
		result := "ok"
		if err != nil {
			result = model.AsError(err).Code
		}
		commands.WithLabelValues(command, result).Inc()
		return resp, err
	}
}
