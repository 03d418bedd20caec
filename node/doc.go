// Package node is the composition root of a hubmesh node: it owns the
// configuration, opens the content plane (mesh), the metadata plane
// (consensus) and the API plane (registryapi), adapts between them, and runs
// the listeners and background services of one process.
//
// It is imported only by cmd/hubmesh and the test harnesses; it may import
// every other package of the module.
package node
