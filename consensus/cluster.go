package consensus

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"github.com/hubmesh/hubmesh"
)

// Server is one entry of the Raft configuration.
type Server struct {
	ID      string
	Address string
	// Suffrage is RoleVoter or RoleNonvoter.
	Suffrage string
	// Leader is true for the server this node knows as the leader.
	Leader bool
}

// Servers returns the latest Raft configuration known to this node (it
// may not be committed yet), in configuration order.
func (n *Node) Servers() ([]Server, error) {
	servers, err := n.configuration()
	if err != nil {
		return nil, err
	}
	leader, _ := n.Leader()
	out := make([]Server, 0, len(servers))
	for _, s := range servers {
		out = append(out, Server{
			ID:       string(s.ID),
			Address:  string(s.Address),
			Suffrage: suffrageRole(s.Suffrage),
			Leader:   leader != "" && string(s.ID) == leader,
		})
	}
	return out, nil
}

func suffrageRole(s raft.ServerSuffrage) string {
	if s == raft.Voter {
		return RoleVoter
	}
	return RoleNonvoter
}

func (n *Node) configuration() ([]raft.Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w: %w", hubmesh.ErrUnavailable, err)
	}
	return f.Configuration().Servers, nil
}

func findServer(servers []raft.Server, id string) (raft.Server, bool) {
	for _, s := range servers {
		if string(s.ID) == id {
			return s, true
		}
	}
	return raft.Server{}, false
}

// AddMember records m and makes it a Raft voter or nonvoter (by m.Role),
// with m.ID as its Raft address. A follower forwards the change to the
// leader. It is idempotent: adding a member again with the same role
// changes nothing; a voter re-added as a nonvoter is demoted, a nonvoter
// re-added as a voter is promoted.
func (n *Node) AddMember(ctx context.Context, m Member) error {
	if err := m.validate(); err != nil {
		return err
	}
	_, err := onLeader(ctx, n, "add member "+m.ID,
		func(ctx context.Context) (struct{}, error) { return n.addMemberLocal(ctx, m) },
		func(ctx context.Context, leader string) (struct{}, error) {
			_, err := n.call(ctx, leader, &rpcRequest{Kind: rpcJoin, Member: &m})
			return struct{}{}, err
		})
	return err
}

// addMemberLocal is AddMember on the leader. The record comes first so
// that the new node is a member (and admitted by the gaters) before Raft
// starts replicating to it.
func (n *Node) addMemberLocal(ctx context.Context, m Member) (struct{}, error) {
	data, err := Encode(&SetMember{Member: m})
	if err != nil {
		return struct{}{}, err
	}
	if _, err := n.applyLocal(ctx, TypeSetMember, data); err != nil {
		return struct{}{}, err
	}
	servers, err := n.configuration()
	if err != nil {
		return struct{}{}, err
	}
	cur, found := findServer(servers, m.ID)
	sameAddr := found && string(cur.Address) == m.ID
	var f raft.Future
	switch {
	case m.Role == RoleVoter && (!sameAddr || cur.Suffrage != raft.Voter):
		f = n.raft.AddVoter(raft.ServerID(m.ID), raft.ServerAddress(m.ID), 0, n.cfg.EnqueueTimeout)
	case m.Role == RoleNonvoter && found && cur.Suffrage == raft.Voter:
		f = n.raft.DemoteVoter(raft.ServerID(m.ID), 0, n.cfg.EnqueueTimeout)
	case m.Role == RoleNonvoter && !sameAddr:
		f = n.raft.AddNonvoter(raft.ServerID(m.ID), raft.ServerAddress(m.ID), 0, n.cfg.EnqueueTimeout)
	default:
		return struct{}{}, nil
	}
	if err := n.wait(ctx, f); err != nil {
		return struct{}{}, fmt.Errorf("add member %s: %w", m.ID, err)
	}
	n.logger.Info("member added", "id", m.ID, "role", m.Role)
	return struct{}{}, nil
}

// RemoveMember takes the node id out of the Raft configuration, then
// deletes its member record and its blob replicas. A follower forwards
// the change to the leader; a leader that removes itself first hands its
// leadership to another voter. It is idempotent. Removing the last voter
// is an error wrapping hubmesh.ErrInvalid.
func (n *Node) RemoveMember(ctx context.Context, id string) error {
	if err := checkNode(id, true); err != nil {
		return err
	}
	_, err := onLeader(ctx, n, "remove member "+id,
		func(ctx context.Context) (struct{}, error) { return n.removeMemberLocal(ctx, id) },
		func(ctx context.Context, leader string) (struct{}, error) {
			_, err := n.call(ctx, leader, &rpcRequest{Kind: rpcRemove, ID: id})
			return struct{}{}, err
		})
	return err
}

// removeMemberLocal is RemoveMember on the leader.
func (n *Node) removeMemberLocal(ctx context.Context, id string) (struct{}, error) {
	servers, err := n.configuration()
	if err != nil {
		return struct{}{}, err
	}
	if cur, found := findServer(servers, id); found {
		voters := 0
		for _, s := range servers {
			if s.Suffrage == raft.Voter {
				voters++
			}
		}
		if cur.Suffrage == raft.Voter && voters == 1 {
			return struct{}{}, fmt.Errorf("remove member %s: %w: it is the last voter", id, hubmesh.ErrInvalid)
		}
		if id == n.cfg.NodeID && n.cfg.RPC != nil {
			// A leader that removes itself steps down and, being out of the
			// configuration, never learns the next leader. Hand leadership
			// over first; the caller then retries on the new leader.
			if err := n.wait(ctx, n.raft.LeadershipTransfer()); err != nil {
				return struct{}{}, fmt.Errorf("remove member %s: transfer leadership: %w", id, err)
			}
			return struct{}{}, fmt.Errorf("remove member %s: %w: leadership handed over", id, hubmesh.ErrNotLeader)
		}
		if err := n.wait(ctx, n.raft.RemoveServer(raft.ServerID(id), 0, n.cfg.EnqueueTimeout)); err != nil {
			return struct{}{}, fmt.Errorf("remove member %s: %w", id, err)
		}
	}
	data, err := Encode(&RemoveMember{ID: id})
	if err != nil {
		return struct{}{}, err
	}
	if _, err := n.applyLocal(ctx, TypeRemoveMember, data); err != nil {
		return struct{}{}, err
	}
	n.logger.Info("member removed", "id", id)
	return struct{}{}, nil
}

// reconcileRetry is the pause before reconcile runs again after failing.
const reconcileRetry = time.Second

// run keeps the replicated state in step with this node until Close:
// see reconcile. It wakes on leader changes, member changes and, after a
// failure, a retry timer.
func (n *Node) run(ctx context.Context) {
	defer close(n.done)
	obsCh, stopObs := n.observeLeader()
	defer stopObs()
	retry := time.NewTimer(reconcileRetry)
	retry.Stop()
	defer retry.Stop()
	for {
		changed := n.fsm.membersChanged()
		if err := n.reconcile(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			n.logger.Warn("cannot update this node's cluster records; retrying", "error", err)
			retry.Reset(reconcileRetry)
		}
		select {
		case <-ctx.Done():
			return
		case <-obsCh:
		case <-changed:
		case <-retry.C:
		}
	}
}

// reconcile makes the replicated state agree with this node: the leader
// of a cluster without an identity proposes InitCluster (a fresh cluster,
// or one created before cluster identities existed), and a node in the
// Raft configuration whose member record is missing or has other addresses
// than Config.Self proposes SetMember. The recorded role is kept (a role
// changes through AddMember); a missing record takes the node's Raft
// suffrage.
func (n *Node) reconcile(ctx context.Context) error {
	leader, _ := n.Leader()
	isLeader := n.IsLeader()
	if leader == "" || (!isLeader && n.cfg.RPC == nil) {
		return nil // a leader change wakes run again
	}
	servers, err := n.configuration()
	if err != nil {
		return err
	}
	self, inConfig := findServer(servers, n.cfg.NodeID)
	if !inConfig {
		return nil // not joined yet, or removed: not ours to record
	}
	if isLeader {
		if _, ok := n.Cluster(); !ok {
			if err := n.initCluster(ctx); err != nil {
				return err
			}
		}
	}
	rec, found, err := n.fsm.member(n.cfg.NodeID)
	if err != nil {
		return err
	}
	want := n.cfg.Self
	want.Role = suffrageRole(self.Suffrage)
	if found {
		want.Role = rec.Role
		if rec.Equal(want) {
			return nil
		}
	}
	if _, err := n.Apply(ctx, &SetMember{Member: want}); err != nil {
		return fmt.Errorf("record this node: %w", err)
	}
	n.logger.Info("recorded this node's member record", "id", want.ID, "http", want.HTTP, "p2p", want.P2P)
	return nil
}

// initCluster proposes a random cluster identity; losing the race to
// another leader's proposal is fine.
func (n *Node) initCluster(ctx context.Context) error {
	key := make([]byte, TokenKeySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("cluster token key: %w", err)
	}
	id := uuid.NewString()
	_, err := n.Apply(ctx, &InitCluster{Cluster: ClusterInfo{ID: id, TokenKey: key}})
	if err != nil && !errors.Is(err, hubmesh.ErrExists) {
		return fmt.Errorf("initialise the cluster: %w", err)
	}
	if err == nil {
		n.logger.Info("initialised the cluster", "cluster", id)
	}
	return nil
}
