// Package consensus is the metadata plane of a hubmesh node: a Raft group
// (hashicorp/raft) whose log, stable store and state machine live in pebble.
//
// It owns the replicated registry metadata — repositories, tags, manifests,
// the referrers index, blob records and repository-blob links — and the
// replicated account state — users, access tokens, organizations, teams,
// team grants, repository and namespace settings, token signing keys,
// cluster settings and the audit log (account.go, account_store.go) —
// together with the command envelope that changes it (command.go), the FSM
// that applies commands (fsm.go), the key layout of the FSM state
// (keys.go), snapshots (snapshot.go) and the pebble LogStore/StableStore
// (logstore.go). It stores and checks account data; the access policy
// that decides from it (hubmesh.AccessFacts) lives in package auth.
//
// A single node is a one-voter cluster bootstrapped on first start; there
// is no separate standalone mode. Its first leader records the cluster
// identity (InitCluster) and every node keeps its own member record
// current (SetMember). Membership changes (AddMember, RemoveMember) are
// Raft configuration changes plus member records (member.go, cluster.go).
//
// Reads are served from the local FSM; a follower that misses locally
// waits for a read barrier and reads again. Writes are Raft commands
// proposed through Node.Apply; a follower forwards them to the leader over
// the consensus RPC (rpc.go), which the node carries over the mesh's RPC
// and serves with Node.HandleRPC. Without a reachable leader, writes fail
// within Config.ForwardTimeout with hubmesh.ErrUnavailable. A forwarded
// request carries the caller's deadline on the leader's clock (the caller
// measures it, clock.go), and the leader refuses it once that has passed,
// so a write the caller reported as failed does not happen later when the
// network delivers what it held during a partition.
//
// The package must not import registryapi, mesh or node, and it keeps raft
// and pebble types out of its API except raft.StreamLayer in Config, which
// the mesh provides through node.
package consensus
