// Package registryapi is the API plane of a hubmesh node: the http.Handler
// for the OCI distribution API under /v2/ (Handler), the Docker registry
// token service at /token (TokenHandler), the Hub REST API under /api/v1/
// (Hub) and the cluster API under /api/v1/cluster/ (ClusterHandler). Auth
// authenticates requests (Basic, registry and session JWTs, personal
// access tokens) and applies the access policy of package auth to them.
//
// It declares the small interfaces it consumes (store.go, accounts.go) and
// knows nothing of how they are implemented: it must not import raft,
// libp2p, pebble, nor the consensus, mesh or node packages; it imports
// auth for the pure rules. Handlers return errors; one adapter (errors.go)
// maps them to error codes and HTTP statuses.
package registryapi
