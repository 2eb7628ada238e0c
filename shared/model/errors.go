package model

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is a typed error that crosses service boundaries: commands answer it
// over NATS and apigw turns it into an HTTP status and {error, code}.
type Error struct {
	// Status is the HTTP status the error maps to (400, 404, 409, 503...).
	Status int `json:"status"`
	// Code is a stable snake_case identifier for programs.
	Code string `json:"code"`
	// Message is for humans.
	Message string `json:"error"`
}

func (e *Error) Error() string { return e.Message }

// Is makes errors.Is match on the code, so sentinels below can be compared
// with errors that came back over the wire.
func (e *Error) Is(target error) bool {
	var t *Error
	if !errors.As(target, &t) {
		return false
	}
	return t.Code == e.Code
}

// Sentinels for errors.Is; their messages are only defaults.
var (
	ErrRegionNotFound = &Error{Status: http.StatusNotFound, Code: "region_not_found", Message: "region not found"}
	ErrRegionExists   = &Error{Status: http.StatusConflict, Code: "region_exists", Message: "region already exists"}
	ErrUnavailable    = &Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "service unavailable"}
	ErrConflict       = &Error{Status: http.StatusConflict, Code: "conflict", Message: "conflicting update, try again"}
)

// Invalid builds a 400 error with the given code.
func Invalid(code, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: code, Message: fmt.Sprintf(format, args...)}
}

// NotFound builds a 404 error for a region.
func NotFound(region string) *Error {
	return &Error{Status: http.StatusNotFound, Code: ErrRegionNotFound.Code, Message: fmt.Sprintf("region %q not found", region)}
}

// Conflict builds a 409 error with the given code.
func Conflict(code, format string, args ...any) *Error {
	return &Error{Status: http.StatusConflict, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Unavailable builds a 503 error.
func Unavailable(format string, args ...any) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: ErrUnavailable.Code, Message: fmt.Sprintf(format, args...)}
}

// AsError returns err as *Error, or a 500 internal error when it is not one.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
}
