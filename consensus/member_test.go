package consensus

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/hubmesh/hubmesh"
)

func tokenKey(b byte) []byte { return bytes.Repeat([]byte{b}, TokenKeySize) }

// signalled empties the Changes channel of h's FSM and reports whether a
// signal was pending.
func (h *fsmHarness) signalled() bool {
	select {
	case <-h.f.changes:
		return true
	default:
		return false
	}
}

func memberIDs(ms []Member) string {
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID+"="+m.Role)
	}
	return strings.Join(ids, ",")
}

func TestFSMInitCluster(t *testing.T) {
	h := newFSM(t)
	if _, ok, err := h.f.cluster(); ok || err != nil {
		t.Fatalf("cluster before InitCluster: ok=%v err=%v", ok, err)
	}
	h.mustApply(&InitCluster{Cluster: ClusterInfo{ID: "c-1", TokenKey: tokenKey(1)}})
	if !h.signalled() {
		t.Fatal("InitCluster did not signal Changes")
	}
	c, ok, err := h.f.cluster()
	if err != nil || !ok || c.ID != "c-1" || !bytes.Equal(c.TokenKey, tokenKey(1)) {
		t.Fatalf("cluster = %+v, %v, %v", c, ok, err)
	}

	// A second identity is refused and writes nothing but the applied index.
	before := h.dump()
	err = h.applyErr(&InitCluster{Cluster: ClusterInfo{ID: "c-2", TokenKey: tokenKey(2)}})
	if !errors.Is(err, hubmesh.ErrExists) || !strings.Contains(err.Error(), "c-1") {
		t.Fatalf("second InitCluster: %v, want ErrExists naming c-1", err)
	}
	after := h.dump()
	delete(before, string(keyApplied))
	delete(after, string(keyApplied))
	if !maps.Equal(before, after) || h.signalled() {
		t.Fatal("a rejected InitCluster changed the state or signalled")
	}
}

func TestFSMMembersAndReplicas(t *testing.T) {
	h := newFSM(t)
	n1 := Member{ID: "n1", HTTP: "http://n1:5000", P2P: []string{"/ip4/10.0.0.1/udp/4001/quic-v1"}, Role: RoleVoter}
	n2 := Member{ID: "n2", HTTP: "http://n2:5000", Role: RoleVoter}
	n3 := Member{ID: "n3", HTTP: "http://n3:5000", Role: RoleNonvoter}
	for _, m := range []Member{n3, n1, n2} {
		h.mustApply(&SetMember{Member: m})
	}
	if !h.signalled() {
		t.Fatal("SetMember did not signal Changes")
	}
	ms, err := h.f.members()
	if err != nil || memberIDs(ms) != "n1=voter,n2=voter,n3=nonvoter" {
		t.Fatalf("members = %q, %v", memberIDs(ms), err)
	}
	if !ms[0].Equal(n1) {
		t.Fatalf("member n1 = %+v, want %+v", ms[0], n1)
	}

	// Setting the same record again is a no-op and signals nothing.
	h.mustApply(&SetMember{Member: n1})
	if h.signalled() {
		t.Fatal("an unchanged SetMember signalled Changes")
	}
	// New addresses replace the record.
	moved := n1
	moved.P2P = []string{"/ip4/10.0.0.9/tcp/4001"}
	h.mustApply(&SetMember{Member: moved})
	if got, ok, _ := h.f.member("n1"); !ok || !got.Equal(moved) || !h.signalled() {
		t.Fatalf("moved member = %+v, %v", got, ok)
	}

	// Replicas: linked by n1, added for n2 and n3.
	layer, other := blobDesc("layer"), blobDesc("other")
	h.mustApply(&LinkBlobs{Repo: "alice/app", Blobs: []hubmesh.Descriptor{layer, other}, Node: "n1"})
	h.mustApply(&AddReplica{Digest: layer.Digest, Size: layer.Size, Node: "n3"})
	h.mustApply(&AddReplica{Digest: layer.Digest, Size: layer.Size, Node: "n2"})
	h.mustApply(&AddReplica{Digest: layer.Digest, Size: layer.Size, Node: "n2"}) // idempotent
	h.mustApply(&AddReplica{Digest: other.Digest, Size: other.Size, Node: "n2"})
	if info, _ := h.f.blob(layer.Digest); strings.Join(info.Replicas, ",") != "n1,n2,n3" {
		t.Fatalf("replicas = %v, want n1,n2,n3", info.Replicas)
	}

	// RemoveMember drops the record and every replica of the node.
	h.mustApply(&RemoveMember{ID: "n2"})
	if !h.signalled() {
		t.Fatal("RemoveMember did not signal Changes")
	}
	if ms, _ := h.f.members(); memberIDs(ms) != "n1=voter,n3=nonvoter" {
		t.Fatalf("members after remove = %q", memberIDs(ms))
	}
	if info, _ := h.f.blob(layer.Digest); strings.Join(info.Replicas, ",") != "n1,n3" {
		t.Fatalf("layer replicas after remove = %v", info.Replicas)
	}
	if info, _ := h.f.blob(other.Digest); strings.Join(info.Replicas, ",") != "n1" {
		t.Fatalf("other replicas after remove = %v", info.Replicas)
	}
	// Removing again succeeds and changes nothing.
	before := h.dump()
	h.mustApply(&RemoveMember{ID: "n2"})
	after := h.dump()
	delete(before, string(keyApplied))
	delete(after, string(keyApplied))
	if !maps.Equal(before, after) || h.signalled() {
		t.Fatal("removing an absent member changed the state or signalled")
	}
	// A node that holds replicas without a record (recorded by LinkBlobs
	// before it had one) loses them too.
	h.mustApply(&RemoveMember{ID: "n1"})
	if info, _ := h.f.blob(other.Digest); len(info.Replicas) != 0 {
		t.Fatalf("other replicas after removing n1 = %v", info.Replicas)
	}
	if _, _, b, _ := h.f.counts(); b != 2 {
		t.Fatalf("blob records %d, want 2 (records stay without replicas)", b)
	}
}

// TestFSMMemberRejectionsWriteNothing covers the new commands' refusals:
// the error reaches the proposer and only the applied index changes.
func TestFSMMemberRejectionsWriteNothing(t *testing.T) {
	layer := blobDesc("layer")
	for _, tc := range []struct {
		name string
		cmd  Command
		want error
	}{
		{"init without id", &InitCluster{Cluster: ClusterInfo{TokenKey: tokenKey(1)}}, hubmesh.ErrInvalid},
		{"init with short key", &InitCluster{Cluster: ClusterInfo{ID: "c", TokenKey: tokenKey(1)[:16]}}, hubmesh.ErrInvalid},
		{"member without id", &SetMember{Member: Member{Role: RoleVoter}}, hubmesh.ErrInvalid},
		{"member with unknown role", &SetMember{Member: Member{ID: "n9", Role: "mirror"}}, hubmesh.ErrInvalid},
		{"member with empty p2p address", &SetMember{Member: Member{ID: "n9", Role: RoleVoter, P2P: []string{""}}}, hubmesh.ErrInvalid},
		{"member with huge http", &SetMember{Member: Member{ID: "n9", Role: RoleVoter, HTTP: strings.Repeat("x", maxHTTPLen+1)}}, hubmesh.ErrInvalid},
		{"remove without id", &RemoveMember{}, hubmesh.ErrInvalid},
		{"replica of unknown blob", &AddReplica{Digest: blobDesc("nope").Digest, Size: 4, Node: "n1"}, hubmesh.ErrBlobUnknown},
		{"replica with wrong size", &AddReplica{Digest: layer.Digest, Size: layer.Size + 1, Node: "n1"}, hubmesh.ErrSizeInvalid},
		{"replica on a non-member", &AddReplica{Digest: layer.Digest, Size: layer.Size, Node: "stranger"}, hubmesh.ErrNotFound},
		{"replica with negative size", &AddReplica{Digest: layer.Digest, Size: -1, Node: "n1"}, hubmesh.ErrSizeInvalid},
		{"replica without node", &AddReplica{Digest: layer.Digest, Size: layer.Size}, hubmesh.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFSM(t)
			h.mustApply(&InitCluster{Cluster: ClusterInfo{ID: "c", TokenKey: tokenKey(1)}})
			h.mustApply(&SetMember{Member: Member{ID: "n1", Role: RoleVoter}})
			h.mustApply(&LinkBlobs{Repo: "alice/app", Blobs: []hubmesh.Descriptor{layer}, Node: "n2"})
			h.signalled()
			before := h.dump()
			if err := h.applyErr(tc.cmd); !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			after := h.dump()
			if got := readU64([]byte(after[string(keyApplied)])); got != h.index {
				t.Fatalf("applied index %d, want %d", got, h.index)
			}
			delete(before, string(keyApplied))
			delete(after, string(keyApplied))
			if !maps.Equal(before, after) || h.signalled() {
				t.Fatal("a rejected command changed the state or signalled")
			}
		})
	}
}

// TestFSMMemberCommandsDecodeFailurePanics: a committed member command
// whose payload does not decode halts the FSM without writing.
func TestFSMMemberCommandsDecodeFailurePanics(t *testing.T) {
	for _, typ := range []Type{TypeInitCluster, TypeSetMember, TypeRemoveMember, TypeAddReplica} {
		t.Run(typ.String(), func(t *testing.T) {
			h := newFSM(t)
			h.mustApply(&SetMember{Member: Member{ID: "n1", Role: RoleVoter}})
			h.mustHalt(append([]byte{envelopeVersion, byte(typ >> 8), byte(typ)}, `{"member":`...))
		})
	}
}

// TestSnapshotKeepsMembers: a snapshot carries the cluster identity, the
// member records and the replica lists, and restoring it signals Changes.
func TestSnapshotKeepsMembers(t *testing.T) {
	src := newFSM(t)
	populate(src, "alice/app")
	src.mustApply(&InitCluster{Cluster: ClusterInfo{ID: "c-1", TokenKey: tokenKey(7)}})
	src.mustApply(&SetMember{Member: Member{ID: "n1", HTTP: "http://n1", P2P: []string{"/dns/n1/tcp/1"}, Role: RoleVoter}})
	src.mustApply(&SetMember{Member: Member{ID: "n2", HTTP: "http://n2", Role: RoleNonvoter}})
	layer := blobDesc("layer of alice/app")
	src.mustApply(&AddReplica{Digest: layer.Digest, Size: layer.Size, Node: "n2"})
	stream := persist(t, src.f)

	dst := newFSM(t)
	dst.mustApply(&SetMember{Member: Member{ID: "old", Role: RoleVoter}})
	dst.signalled()
	if err := dst.f.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatal(err)
	}
	if !dst.signalled() {
		t.Fatal("Restore did not signal Changes")
	}
	if !maps.Equal(src.dump(), dst.dump()) {
		t.Fatal("restored state differs")
	}
	dst.reopen()
	ms, err := dst.f.members()
	if err != nil || memberIDs(ms) != "n1=voter,n2=nonvoter" || ms[0].HTTP != "http://n1" || !slices.Equal(ms[0].P2P, []string{"/dns/n1/tcp/1"}) {
		t.Fatalf("members after restore = %+v, %v", ms, err)
	}
	if c, ok, _ := dst.f.cluster(); !ok || c.ID != "c-1" || !bytes.Equal(c.TokenKey, tokenKey(7)) {
		t.Fatalf("cluster after restore = %+v, %v", c, ok)
	}
	if info, _ := dst.f.blob(layer.Digest); strings.Join(info.Replicas, ",") != "n1,n2" {
		t.Fatalf("replicas after restore = %v", info.Replicas)
	}
}
