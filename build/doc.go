// Package build holds the self-contained parts of automated builds (issue 7):
// build rules and their tag templates (rules.go), git host push webhooks and
// Docker Hub trigger bodies (triggers.go), cloning the exact commit of a git
// source with go-git (source.go), and a small Docker Engine API client that
// tars a build context, builds and pushes (engine.go).
//
// It knows nothing about Raft, the job queue, nodes or the HTTP API: the
// builder service in node wires these pieces together. It imports only the
// root package (for its sentinel errors), the standard library, go-git and
// golang.org/x/crypto/ssh; it must not import node, consensus, mesh or
// registryapi.
package build
