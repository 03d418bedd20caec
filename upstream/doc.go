// Package upstream is a small pull-only client of an external OCI
// distribution registry (Docker Hub, another hubmesh cluster, any
// registry), used by a node's pull-through cache. It resolves tags,
// fetches manifests and blobs, runs the registry token flow (a 401 with a
// Bearer challenge sends it to the realm, with Basic credentials when it
// has some) and verifies manifest digests.
//
// It imports only the module root and the standard library (plus
// go-digest); it must not import registryapi, consensus, mesh or node.
package upstream
