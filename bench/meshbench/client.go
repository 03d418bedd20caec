package main

import "github.com/hubmesh/hubmesh/bench/internal/regclient"

// newClient is an OCI client of the node at base, dialling from inside
// network namespace ns when ns is set, with up to conns idle connections.
func newClient(base, ns string, conns int) *regclient.Client {
	return regclient.NewClient(base, newTransport(ns, conns), conns)
}
