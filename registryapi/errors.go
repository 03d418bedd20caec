package registryapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/hubmesh/hubmesh"
)

// errorCode names one row of the wire error table. Each row ties an OCI
// error code to the HTTP status it is sent with, so that no handler picks a
// status on its own.
type errorCode int

const (
	codeUnknown errorCode = iota
	codeBlobUnknown
	codeBlobUploadInvalid
	codeBlobUploadUnknown
	codeDigestInvalid
	codeManifestBlobUnknown
	codeManifestInvalid
	codeManifestUnknown
	codeManifestTooLarge
	codeNameInvalid
	codeNameUnknown
	codeSizeInvalid
	codeTagInvalid
	codePaginationInvalid
	codeRangeInvalid
	codeBadRequest
	codeDenied
	codeConflict
	codeMethodNotAllowed
	codeNotFound
	codeUnavailable
	codeUnauthorized
	codeTooManyRequests
	codeCount // keep last
)

// errorTable is the one place where wire codes meet HTTP statuses.
var errorTable = [codeCount]struct {
	code    string
	status  int
	message string
}{
	codeUnknown:             {"UNKNOWN", http.StatusInternalServerError, "internal error"},
	codeBlobUnknown:         {"BLOB_UNKNOWN", http.StatusNotFound, "blob unknown to registry"},
	codeBlobUploadInvalid:   {"BLOB_UPLOAD_INVALID", http.StatusBadRequest, "blob upload invalid"},
	codeBlobUploadUnknown:   {"BLOB_UPLOAD_UNKNOWN", http.StatusNotFound, "blob upload unknown to registry"},
	codeDigestInvalid:       {"DIGEST_INVALID", http.StatusBadRequest, "provided digest did not match uploaded content"},
	codeManifestBlobUnknown: {"MANIFEST_BLOB_UNKNOWN", http.StatusBadRequest, "manifest references a blob unknown to registry"},
	codeManifestInvalid:     {"MANIFEST_INVALID", http.StatusBadRequest, "manifest invalid"},
	codeManifestUnknown:     {"MANIFEST_UNKNOWN", http.StatusNotFound, "manifest unknown to registry"},
	codeManifestTooLarge:    {"SIZE_INVALID", http.StatusRequestEntityTooLarge, "manifest too large"},
	codeNameInvalid:         {"NAME_INVALID", http.StatusBadRequest, "invalid repository name"},
	codeNameUnknown:         {"NAME_UNKNOWN", http.StatusNotFound, "repository name not known to registry"},
	codeSizeInvalid:         {"SIZE_INVALID", http.StatusBadRequest, "provided length did not match content length"},
	codeTagInvalid:          {"TAG_INVALID", http.StatusBadRequest, "invalid tag"},
	codePaginationInvalid:   {"PAGINATION_NUMBER_INVALID", http.StatusBadRequest, "invalid number of results requested"},
	codeRangeInvalid:        {"RANGE_INVALID", http.StatusRequestedRangeNotSatisfiable, "invalid content range"},
	codeBadRequest:          {"UNSUPPORTED", http.StatusBadRequest, "the request is invalid"},
	codeDenied:              {"DENIED", http.StatusForbidden, "requested access to the resource is denied"},
	codeConflict:            {"DENIED", http.StatusConflict, "the resource is in a conflicting state"},
	codeMethodNotAllowed:    {"UNSUPPORTED", http.StatusMethodNotAllowed, "the operation is unsupported"},
	codeNotFound:            {"NOT_FOUND", http.StatusNotFound, "no such API endpoint"},
	codeUnavailable:         {"UNAVAILABLE", http.StatusServiceUnavailable, "service unavailable, retry later"},
	codeUnauthorized:        {"UNAUTHORIZED", http.StatusUnauthorized, "authentication required"},
	codeTooManyRequests:     {"TOOMANYREQUESTS", http.StatusTooManyRequests, "too many requests"},
}

// apiError is an error that knows its wire code. Handlers return it (or a
// domain error that toAPIError maps) and writeError sends it.
type apiError struct {
	code    errorCode
	message string
	detail  any
	cause   error
	// headers are set on the error response (WWW-Authenticate,
	// Retry-After).
	headers [][2]string
}

func (e *apiError) Error() string {
	msg := e.message
	if msg == "" {
		msg = errorTable[e.code].message
	}
	if e.cause != nil && e.cause.Error() != msg {
		return msg + ": " + e.cause.Error()
	}
	return msg
}

func (e *apiError) Unwrap() error { return e.cause }

// newError builds a wire error with a message for the client.
func newError(code errorCode, format string, args ...any) *apiError {
	return &apiError{code: code, message: fmt.Sprintf(format, args...)}
}

// withDetail attaches the detail object of the OCI error body.
func (e *apiError) withDetail(d any) *apiError {
	e.detail = d
	return e
}

// withHeader sets a header of the error response.
func (e *apiError) withHeader(key, value string) *apiError {
	e.headers = append(e.headers, [2]string{key, value})
	return e
}

// header returns the value of a header withHeader set, or "".
func (e *apiError) header(key string) string {
	for _, h := range e.headers {
		if h[0] == key {
			return h[1]
		}
	}
	return ""
}

// bodyError marks a failure to read the request body: the client's fault,
// never the store's, even when the store wrapped it.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "reading request body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// sentinelCodes maps domain errors to wire codes. toAPIError takes the
// first row err matches, so the specific sentinels come before the generic
// ones they may also wrap (ErrNotFound, ErrInvalid).
var sentinelCodes = []struct {
	err  error
	code errorCode
}{
	{hubmesh.ErrRepoUnknown, codeNameUnknown},
	{hubmesh.ErrManifestUnknown, codeManifestUnknown},
	{hubmesh.ErrBlobUnknown, codeBlobUnknown},
	{hubmesh.ErrUploadUnknown, codeBlobUploadUnknown},
	{hubmesh.ErrManifestBlobUnknown, codeManifestBlobUnknown},
	{hubmesh.ErrDigestMismatch, codeDigestInvalid},
	{hubmesh.ErrRangeInvalid, codeRangeInvalid},
	{hubmesh.ErrSizeInvalid, codeSizeInvalid},
	{hubmesh.ErrUnauthenticated, codeUnauthorized},
	{hubmesh.ErrRateLimited, codeTooManyRequests},
	{hubmesh.ErrNotLeader, codeUnavailable},
	{hubmesh.ErrUnavailable, codeUnavailable},
	{context.DeadlineExceeded, codeUnavailable},
	{context.Canceled, codeUnavailable},
	{hubmesh.ErrDenied, codeDenied},
	{hubmesh.ErrExists, codeConflict},
	{hubmesh.ErrNotFound, codeNotFound},
	{hubmesh.ErrInvalid, codeBadRequest},
}

// toAPIError maps any error a handler returns to its wire form. Domain
// errors are matched with errors.Is against the root sentinels, most
// specific first.
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var be *bodyError
	if errors.As(err, &be) {
		return &apiError{code: codeBlobUploadInvalid, message: be.Error(), cause: err}
	}
	code := codeUnknown
	for _, m := range sentinelCodes {
		if errors.Is(err, m.err) {
			code = m.code
			break
		}
	}
	return &apiError{code: code, message: err.Error(), cause: err}
}

type wireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// retryAfterSeconds is what a 503 asks clients to wait before retrying.
const retryAfterSeconds = "1"

// writeError is the one adapter that turns a handler's error into an OCI
// error response; every handler of this package ends here. A 5xx logs its
// cause once and tells the client nothing about internals.
func writeError(log *slog.Logger, w http.ResponseWriter, r *http.Request, route string, err error) {
	ae := toAPIError(err)
	row := errorTable[ae.code]
	msg := ae.message
	if msg == "" {
		msg = row.message
	}
	if row.status >= 500 {
		msg = row.message
		switch {
		case r.Context().Err() != nil:
			log.Debug("request ended by client", "method", r.Method, "route", route, "err", err)
		case row.status == http.StatusServiceUnavailable:
			log.Warn("request refused, retry later", "method", r.Method, "route", route, "err", err)
		default:
			log.Error("request failed", "method", r.Method, "route", route, "status", row.status, "err", err)
		}
	}
	hdr := w.Header()
	hdr.Del("Content-Length")
	hdr.Del("Docker-Content-Digest")
	hdr.Del("ETag")
	hdr.Set("Content-Type", "application/json")
	hdr.Set("X-Content-Type-Options", "nosniff")
	if row.status == http.StatusServiceUnavailable {
		hdr.Set("Retry-After", retryAfterSeconds)
	}
	for _, h := range ae.headers {
		hdr.Set(h[0], h[1])
	}
	body, mErr := json.Marshal(struct {
		Errors []wireError `json:"errors"`
	}{[]wireError{{Code: row.code, Message: msg, Detail: ae.detail}}})
	if mErr != nil { // a detail that cannot be encoded: drop it
		body, _ = json.Marshal(struct {
			Errors []wireError `json:"errors"`
		}{[]wireError{{Code: row.code, Message: msg}}})
	}
	body = append(body, '\n')
	hdr.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(row.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
