// Package registryapi is the API plane of a hubmesh node: the http.Handler
// for the OCI distribution API under /v2/ (and, in later issues, /token,
// /v1 and /api/v1).
//
// It declares the small interfaces it consumes (store.go) and knows nothing
// of how they are implemented: it must not import raft, libp2p, pebble, nor
// the consensus, mesh or node packages. Handlers return errors; one adapter
// (errors.go) maps them to OCI error codes and HTTP statuses.
package registryapi
