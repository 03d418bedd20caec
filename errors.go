package hubmesh

import "errors"

// Root sentinels. Every error that crosses a package boundary wraps one of
// these (directly or through one of the specific errors below) so that
// callers can match with errors.Is and the API plane can map it to a wire
// error code.
var (
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrInvalid     = errors.New("invalid")
	ErrDenied      = errors.New("denied")
	ErrNotLeader   = errors.New("not the leader")
	ErrUnavailable = errors.New("unavailable")
	// ErrUnauthenticated: the request carries no credentials, or bad ones
	// (HTTP 401 with a challenge). ErrDenied is for a known identity that
	// lacks a permission (403).
	ErrUnauthenticated = errors.New("authentication required")
	// ErrRateLimited: too many attempts; retry later (HTTP 429).
	ErrRateLimited = errors.New("too many requests")
)

// Specific errors. Each one is also its root sentinel:
// errors.Is(ErrManifestUnknown, ErrNotFound) is true.
var (
	ErrRepoUnknown         = &kindError{"repository unknown", ErrNotFound}
	ErrManifestUnknown     = &kindError{"manifest unknown", ErrNotFound}
	ErrBlobUnknown         = &kindError{"blob unknown", ErrNotFound}
	ErrUploadUnknown       = &kindError{"blob upload unknown", ErrNotFound}
	ErrManifestBlobUnknown = &kindError{"manifest references unknown blob", ErrInvalid}
	ErrDigestMismatch      = &kindError{"digest does not match content", ErrInvalid}
	ErrRangeInvalid        = &kindError{"range invalid", ErrInvalid}
	ErrSizeInvalid         = &kindError{"size invalid", ErrInvalid}
)

type kindError struct {
	msg  string
	base error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.base }
