// Package nodetest runs the real hubmesh binary in tests: it builds the
// binary once per test binary, starts `hubmesh serve` on loopback with port 0,
// learns the addresses from the addr file, streams the process output to
// t.Log, and kills, stops and restarts it. It starts clusters of such
// processes too (StartCluster, Join), joining them with tokens from the
// real `hubmesh cluster join-token`, and reads their cluster status to find
// the leader (Leader, WaitStatus). Every node gets an administrator
// password of the test's own (--admin-password-file; Process.Admin,
// Process.Env), which CLI passes to the node a command names, and
// DockerConfig writes it for the docker CLI, crane, regctl, oras and
// skopeo. It also finds the client tools the end-to-end tests drive
// (crane, regctl, oras, skopeo, the OCI conformance suite, docker) and
// decides whether a missing one skips or fails the test.
//
// nodetest talks to the node only through its process, its addr file and
// HTTP, so it does not import node or any package below it: a test binary
// using it does not link libp2p, raft or pebble.
package nodetest
