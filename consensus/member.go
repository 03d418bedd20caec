package consensus

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// Member roles. A voter takes part in Raft elections and commits; a
// nonvoter (a mirror) only receives the log.
const (
	RoleVoter    = "voter"
	RoleNonvoter = "nonvoter"
)

// Limits on a member record, well above any real address list.
const (
	maxHTTPLen  = 2048
	maxP2PAddrs = 32
	maxAddrLen  = 1024
	// TokenKeySize is the length of ClusterInfo.TokenKey.
	TokenKeySize = 32
)

// Member is the replicated record of one node: how to reach it and what
// it is. Its ID is the node's Raft server ID, which is also its Raft
// address and its libp2p peer ID.
type Member struct {
	ID string `json:"id"`
	// HTTP is the base URL of the node's registry API.
	HTTP string `json:"http,omitempty"`
	// P2P are the node's libp2p multiaddrs.
	P2P []string `json:"p2p,omitempty"`
	// Role is RoleVoter or RoleNonvoter.
	Role string `json:"role"`
}

// Equal reports whether m and o are the same record.
func (m Member) Equal(o Member) bool {
	return m.ID == o.ID && m.HTTP == o.HTTP && m.Role == o.Role && slices.Equal(m.P2P, o.P2P)
}

func (m *Member) validate() error {
	if err := checkNode(m.ID, true); err != nil {
		return err
	}
	if m.Role != RoleVoter && m.Role != RoleNonvoter {
		return fmt.Errorf("%w: member %s: role %q is neither %q nor %q", hubmesh.ErrInvalid, m.ID, m.Role, RoleVoter, RoleNonvoter)
	}
	if len(m.HTTP) > maxHTTPLen {
		return fmt.Errorf("%w: member %s: http address of %d bytes", hubmesh.ErrInvalid, m.ID, len(m.HTTP))
	}
	if len(m.P2P) > maxP2PAddrs {
		return fmt.Errorf("%w: member %s: %d p2p addresses, at most %d", hubmesh.ErrInvalid, m.ID, len(m.P2P), maxP2PAddrs)
	}
	for _, a := range m.P2P {
		if a == "" || len(a) > maxAddrLen {
			return fmt.Errorf("%w: member %s: p2p address %q", hubmesh.ErrInvalid, m.ID, a)
		}
	}
	return nil
}

// ClusterInfo identifies a cluster. It is set once, by InitCluster.
type ClusterInfo struct {
	// ID names the cluster; join tokens are bound to it.
	ID string `json:"id"`
	// TokenKey is the HMAC-SHA256 key of join tokens (TokenKeySize bytes).
	TokenKey []byte `json:"token_key"`
}

// InitCluster records the cluster's identity. The first leader of a new
// cluster proposes it with a random ID and key; it is rejected with an
// error wrapping hubmesh.ErrExists once the identity is set.
type InitCluster struct {
	Cluster ClusterInfo `json:"cluster"`
}

// SetMember creates or replaces the record of Member.ID.
type SetMember struct {
	Member Member `json:"member"`
}

// RemoveMember deletes the record of ID and drops ID from the replica
// list of every blob. Removing an unknown member succeeds and changes
// nothing, so the command is idempotent.
type RemoveMember struct {
	ID string `json:"id"`
}

// AddReplica records that Node holds the content of a recorded blob. Node
// must be a member; Size must match the blob record.
type AddReplica struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	Node   string        `json:"node"`
}

// Type implements Command.
func (*InitCluster) Type() Type { return TypeInitCluster }

// Type implements Command.
func (*SetMember) Type() Type { return TypeSetMember }

// Type implements Command.
func (*RemoveMember) Type() Type { return TypeRemoveMember }

// Type implements Command.
func (*AddReplica) Type() Type { return TypeAddReplica }

func (c *InitCluster) validate() error {
	id := c.Cluster.ID
	if id == "" || len(id) > maxNodeLen || strings.ContainsRune(id, 0) {
		return fmt.Errorf("%w: cluster id %q", hubmesh.ErrInvalid, id)
	}
	if len(c.Cluster.TokenKey) != TokenKeySize {
		return fmt.Errorf("%w: cluster token key of %d bytes, want %d", hubmesh.ErrInvalid, len(c.Cluster.TokenKey), TokenKeySize)
	}
	return nil
}

func (c *SetMember) validate() error { return c.Member.validate() }

func (c *RemoveMember) validate() error { return checkNode(c.ID, true) }

func (c *AddReplica) validate() error {
	if err := checkDigest("blob", c.Digest); err != nil {
		return err
	}
	if c.Size < 0 {
		return fmt.Errorf("blob %s: %w: negative size %d", c.Digest, hubmesh.ErrSizeInvalid, c.Size)
	}
	return checkNode(c.Node, true)
}

func (c *InitCluster) apply(tx *txn) (any, error) {
	var cur ClusterInfo
	if tx.getJSON(keyCluster, &cur) {
		return nil, fmt.Errorf("cluster %s: %w: the cluster identity is already set", cur.ID, hubmesh.ErrExists)
	}
	tx.setJSON(keyCluster, c.Cluster)
	tx.membersChanged = true
	return nil, nil
}

func (c *SetMember) apply(tx *txn) (any, error) {
	k := memberKey(c.Member.ID)
	raw, err := json.Marshal(c.Member)
	if err != nil {
		panic(fmt.Sprintf("consensus: fsm: encode member %s: %v", c.Member.ID, err))
	}
	if old, ok := tx.get(k); ok && bytes.Equal(old, raw) {
		return nil, nil
	}
	tx.set(k, raw)
	tx.membersChanged = true
	return nil, nil
}

func (c *RemoveMember) apply(tx *txn) (any, error) {
	if tx.has(memberKey(c.ID)) {
		tx.del(memberKey(c.ID))
		tx.membersChanged = true
	}
	type update struct {
		k   []byte
		rec blobRecord
	}
	var updates []update
	err := scan(tx.b, prefixBlob, nil, 0, func(k, v []byte) error {
		var rec blobRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("corrupt value of %q: %w", k, err)
		}
		if i, found := slices.BinarySearch(rec.Replicas, c.ID); found {
			rec.Replicas = slices.Delete(rec.Replicas, i, i+1)
			updates = append(updates, update{bytes.Clone(k), rec})
		}
		return nil
	})
	if err != nil {
		panic(fmt.Sprintf("consensus: fsm: scan blobs: %v", err))
	}
	for _, u := range updates {
		tx.setJSON(u.k, u.rec)
	}
	return nil, nil
}

func (c *AddReplica) apply(tx *txn) (any, error) {
	if !tx.has(memberKey(c.Node)) {
		return nil, fmt.Errorf("replica of %s: %w: node %s is not a member", c.Digest, hubmesh.ErrNotFound, c.Node)
	}
	var rec blobRecord
	if !tx.getJSON(blobKey(c.Digest), &rec) {
		return nil, fmt.Errorf("replica of %s: %w", c.Digest, hubmesh.ErrBlobUnknown)
	}
	if rec.Size != c.Size {
		return nil, fmt.Errorf("replica of %s: %w: size %d, recorded %d", c.Digest, hubmesh.ErrSizeInvalid, c.Size, rec.Size)
	}
	if _, found := slices.BinarySearch(rec.Replicas, c.Node); !found {
		tx.addReplica(c.Digest, c.Size, c.Node)
	}
	return nil, nil
}

// members lists the member records in ID order.
func (f *stateMachine) members() ([]Member, error) {
	var out []Member
	err := f.read(func(r reader) error {
		return scan(r, prefixMember, nil, 0, func(k, v []byte) error {
			var m Member
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("corrupt member %q: %w", k, err)
			}
			out = append(out, m)
			return nil
		})
	})
	return out, err
}

// member returns the record of id and whether it exists.
func (f *stateMachine) member(id string) (Member, bool, error) {
	var m Member
	var ok bool
	err := f.read(func(r reader) error {
		v, found, err := getValue(r, memberKey(id))
		if err != nil || !found {
			return err
		}
		ok = true
		return json.Unmarshal(v, &m)
	})
	return m, ok, err
}

// cluster returns the cluster identity and whether it is set.
func (f *stateMachine) cluster() (ClusterInfo, bool, error) {
	var c ClusterInfo
	var ok bool
	err := f.read(func(r reader) error {
		v, found, err := getValue(r, keyCluster)
		if err != nil || !found {
			return err
		}
		ok = true
		return json.Unmarshal(v, &c)
	})
	return c, ok, err
}

// Members returns the member records, sorted by ID. It is empty before
// the first member is recorded and once the node is closed.
func (n *Node) Members() []Member {
	ms, err := n.fsm.members()
	if err != nil {
		n.logger.Warn("read members", "error", err)
		return nil
	}
	return ms
}

// Cluster returns the cluster identity; false until InitCluster has been
// applied on this node.
func (n *Node) Cluster() (ClusterInfo, bool) {
	c, ok, err := n.fsm.cluster()
	if err != nil {
		n.logger.Warn("read cluster identity", "error", err)
		return ClusterInfo{}, false
	}
	return c, ok
}

// Changes is signalled after this node applies a command that changes a
// member record or the cluster identity, and after a snapshot restore.
// Signals coalesce: one pending signal stands for any number of changes,
// so the receiver re-reads Members and Cluster. There is one channel per
// node, for one consumer.
func (n *Node) Changes() <-chan struct{} { return n.fsm.changes }
