package main

import "github.com/hubmesh/hubmesh/bench/internal/regclient"

// newClient is an OCI client of node n, dialling from inside network
// namespace ns when ns is set, with up to conns idle connections. It
// authenticates as the cluster's administrator.
func newClient(n *node, ns string, conns int) *regclient.Client {
	return regclient.NewClient(n.base, regclient.BasicAuth(newTransport(ns, conns), n.user, n.password), conns)
}
