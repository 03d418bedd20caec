// Package hubmesh holds the vocabulary shared by every part of a hubmesh
// node: the domain records that travel between the API plane, the metadata
// plane and the content plane, and the sentinel errors they are matched by.
//
// It must not import any other package of this module, nor raft, libp2p or
// pebble: it is the bottom of the import graph
// (cmd -> node -> {registryapi, consensus, mesh} -> hubmesh).
package hubmesh
