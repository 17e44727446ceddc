// Package jsonapi holds the HTTP plumbing ledgerd's two listeners share: strict JSON request
// decoding with a size limit, the error body {"error":{"type":…,"message":…}}, and bearer
// token checks in constant time.
package jsonapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"unicode/utf8"
)

// BodyBytesMax bounds every request body. ledgerd's requests are small; anything larger is
// a mistake or an attack.
const BodyBytesMax = 64 << 10

// Error types.
const (
	TypeInvalidRequest = "invalid_request_error" // 400
	TypeAuthentication = "authentication_error"  // 401
	TypeBilling        = "billing_error"         // 402
	TypePermission     = "permission_error"      // 403
	TypeNotFound       = "not_found_error"       // 404
	TypeNotAllowed     = "method_not_allowed"    // 405
	TypeConflict       = "conflict_error"        // 409
	TypeTooLarge       = "request_too_large"     // 413
	TypeAPI            = "api_error"             // 500, 503
)

// Error is an API error: status, type and a message safe to show the caller.
type Error struct {
	Status  int
	Type    string
	Message string
	// Available, when set, is added to the body as available_microcredits (lease refusals).
	Available *int64
	// Recallable, when non-zero, is added as recallable_microcredits (lease refusals that
	// recalled other nodes' leases).
	Recallable int64
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message) }

// Errorf builds an Error.
func Errorf(status int, typ, format string, args ...any) *Error {
	return &Error{Status: status, Type: typ, Message: fmt.Sprintf(format, args...)}
}

type errorBody struct {
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
	Available  *int64 `json:"available_microcredits,omitempty"`
	Recallable int64  `json:"recallable_microcredits,omitempty"`
}

// WriteError writes err as the error body. Errors that are not *Error are internal: they are
// logged and the caller sees a generic 500, never the database's message.
func WriteError(w http.ResponseWriter, log *slog.Logger, err error) {
	var e *Error
	if !errors.As(err, &e) {
		log.Error("request_failed", "error", err)
		e = Errorf(http.StatusInternalServerError, TypeAPI, "internal error")
	}
	var b errorBody
	b.Error.Type, b.Error.Message, b.Available, b.Recallable = e.Type, e.Message, e.Available, e.Recallable
	WriteJSON(w, e.Status, b)
}

// WriteJSON writes v as the JSON body with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Decode reads exactly one JSON object into v: unknown fields, trailing data and bodies over
// BodyBytesMax are refused with a 400 (413 for size) Error.
func Decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, BodyBytesMax))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return Errorf(http.StatusRequestEntityTooLarge, TypeTooLarge, "body over %d bytes", BodyBytesMax)
		}
		if errors.Is(err, io.EOF) {
			return Errorf(http.StatusBadRequest, TypeInvalidRequest, "empty body: want a JSON object")
		}
		return Errorf(http.StatusBadRequest, TypeInvalidRequest, "malformed JSON: %v", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return Errorf(http.StatusBadRequest, TypeInvalidRequest, "malformed JSON: trailing data after the object")
	}
	return nil
}

// Bearer guards a handler with "Authorization: Bearer <token>". Both sides are hashed before
// the constant-time compare, so neither the token's content nor its length leaks by timing.
func Bearer(token string, log *slog.Logger, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		const scheme = "Bearer "
		h, got := r.Header.Get("Authorization"), ""
		// The scheme is case-insensitive (RFC 9110 §11.1).
		ok := len(h) > len(scheme) && strings.EqualFold(h[:len(scheme)], scheme)
		if ok {
			got = h[len(scheme):]
		}
		sum := sha256.Sum256([]byte(got))
		if !ok || token == "" || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			WriteError(w, log, Errorf(http.StatusUnauthorized, TypeAuthentication, "missing or invalid bearer token"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ValidText reports whether s is valid UTF-8 of at most maxBytes without control characters.
// Ids and names must pass it before reaching the database: PostgreSQL refuses NUL and invalid
// UTF-8 in TEXT, which would turn a bad request into a 500.
func ValidText(s string, maxBytes int) bool {
	if len(s) > maxBytes || !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// PathBytesMax bounds a request path; ids are far shorter.
const PathBytesMax = 1024

// Handler adapts a function returning an error to http.Handler, writing the error body.
// Requests whose decoded path is not valid text cannot name anything and get a 404 before
// any path value reaches fn.
func Handler(log *slog.Logger, fn func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ValidText(r.URL.Path, PathBytesMax) {
			WriteError(w, log, Errorf(http.StatusNotFound, TypeNotFound, "no such resource"))
			return
		}
		if err := fn(w, r); err != nil {
			WriteError(w, log, err)
		}
	})
}

// NotFound and MethodNotAllowed answer in the error shape where net/http would send text.
func NotFound(log *slog.Logger) http.Handler {
	return Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		return Errorf(http.StatusNotFound, TypeNotFound, "no route for %s %s", r.Method, r.URL.Path)
	})
}

// MethodNotAllowed answers 405 in the error shape.
func MethodNotAllowed(log *slog.Logger) http.Handler {
	return Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		return Errorf(http.StatusMethodNotAllowed, TypeNotAllowed, "method %s not allowed on %s", r.Method, r.URL.Path)
	})
}
