package apigw

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/mrlb/mrlb/shared/model"
)

// errorBody is the contract's error document; model.Error also carries the
// status, which belongs in the HTTP status line, not the body.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// fiberCodes names fiber's own errors (routing, body limit, header size)
// with stable snake_case codes.
var fiberCodes = map[int]string{
	http.StatusBadRequest:                  "bad_request",
	http.StatusNotFound:                    "not_found",
	http.StatusMethodNotAllowed:            "method_not_allowed",
	http.StatusRequestTimeout:              "request_timeout",
	http.StatusRequestEntityTooLarge:       "body_too_large",
	http.StatusRequestHeaderFieldsTooLarge: "headers_too_large",
	http.StatusUnsupportedMediaType:        "unsupported_media_type",
	http.StatusTooManyRequests:             "rate_limited",
	http.StatusServiceUnavailable:          "unavailable",
}

// toModelError is the one mapping from any error to a status and code, so
// every transport error (ours, fiber's, a panic) reads the same to clients.
func toModelError(err error) *model.Error {
	var me *model.Error
	if errors.As(err, &me) {
		return me
	}
	var fe *fiber.Error
	if errors.As(err, &fe) {
		code, ok := fiberCodes[fe.Code]
		if !ok {
			code = strings.ReplaceAll(strings.ToLower(http.StatusText(fe.Code)), " ", "_")
			if code == "" {
				code = "error"
			}
		}
		msg := fe.Message
		switch fe.Code {
		case http.StatusNotFound:
			msg = "no such endpoint"
		case http.StatusRequestEntityTooLarge:
			msg = "request body is larger than 1 MiB"
		}
		return &model.Error{Status: fe.Code, Code: code, Message: msg}
	}
	return model.AsError(err)
}

// errorHandler is fiber's ErrorHandler: it writes every error as the
// contract's JSON and logs what is the server's fault.
func (s *Service) errorHandler(c *fiber.Ctx, err error) error {
	e := toModelError(err)
	if e.Status >= http.StatusInternalServerError && e.Status != http.StatusServiceUnavailable {
		s.log.Error("request failed", "method", c.Method(), "path", c.Path(), "err", err)
	}
	werr := writeError(c, e)
	if observed, _ := c.Locals(observedKey).(bool); !observed {
		s.record(c, 0) // rejected by fasthttp before any middleware ran
	}
	return werr
}

func writeError(c *fiber.Ctx, e *model.Error) error {
	if e.Status == http.StatusUnauthorized && len(c.Response().Header.Peek(fiber.HeaderWWWAuthenticate)) == 0 {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="mrlb"`)
	}
	return c.Status(e.Status).JSON(errorBody{Error: e.Message, Code: e.Code})
}

// errMissingBody is returned when a body is required and none was sent.
var errMissingBody = model.Invalid("missing_body", "request body is required")

// decodeStrict decodes a JSON body into v, rejecting unknown fields and
// trailing data; an empty body is allowed only when optional is set.
func decodeStrict(body []byte, v any, optional bool) error {
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return nil
		}
		return errMissingBody
	}
	if err := model.DecodeStrict(body, v); err != nil {
		return model.Invalid("invalid_json", "invalid request body: %s", jsonErrText(err))
	}
	return nil
}

// jsonErrText keeps decoder messages short and free of Go type names.
func jsonErrText(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return "field " + te.Field + " has the wrong type"
		}
		return "expected a JSON object"
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "truncated JSON"
	}
	return err.Error()
}
