package mesh

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/hubmesh/hubmesh"
)

// ErrNotMember is matched (errors.Is) by errors about a peer that is
// neither a cluster member nor temporarily admitted. It wraps
// hubmesh.ErrDenied.
var ErrNotMember = fmt.Errorf("peer is not a cluster member: %w", hubmesh.ErrDenied)

// memberGater is the connection gater every Host runs: it admits only
// cluster members and peers admitted until some time (joiners holding a
// valid join token), in both directions. Peer IDs are known from the
// security handshake on, so InterceptSecured is where a stranger is shut
// out; dials to strangers are refused before they start.
//
// An empty member set admits nobody but admitted peers: a single node, or
// a joiner before its join completes, talks to no one else.
type memberGater struct {
	self peer.ID
	now  func() time.Time

	mu       sync.RWMutex
	members  map[peer.ID]struct{}
	admitted map[peer.ID]time.Time // admitted until (exclusive)
}

var _ connmgr.ConnectionGater = (*memberGater)(nil)

func newMemberGater() *memberGater {
	return &memberGater{
		now:      time.Now,
		members:  map[peer.ID]struct{}{},
		admitted: map[peer.ID]time.Time{},
	}
}

// allowed reports whether p may hold a connection to this host now.
func (g *memberGater) allowed(p peer.ID) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.allowedLocked(p, g.now())
}

func (g *memberGater) allowedLocked(p peer.ID, now time.Time) bool {
	if p == "" || p == g.self {
		return false
	}
	if _, ok := g.members[p]; ok {
		return true
	}
	until, ok := g.admitted[p]
	return ok && now.Before(until)
}

// anyAllowed reports whether any peer at all may connect now; when none
// may, inbound connections are refused before their handshake.
func (g *memberGater) anyAllowed() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if len(g.members) > 0 {
		return true
	}
	now := g.now()
	for _, until := range g.admitted {
		if now.Before(until) {
			return true
		}
	}
	return false
}

// setMembers replaces the member set.
func (g *memberGater) setMembers(ids []peer.ID) {
	m := make(map[peer.ID]struct{}, len(ids))
	for _, id := range ids {
		if id != g.self {
			m[id] = struct{}{}
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.members = m
}

// admit admits p until the given time, replacing an earlier admission.
func (g *memberGater) admit(p peer.ID, until time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.now().Before(until) {
		delete(g.admitted, p)
		return
	}
	g.admitted[p] = until
}

// prune forgets expired admissions and returns the earliest expiry still
// pending (zero if none).
func (g *memberGater) prune() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	var next time.Time
	for p, until := range g.admitted {
		if !now.Before(until) {
			delete(g.admitted, p)
			continue
		}
		if next.IsZero() || until.Before(next) {
			next = until
		}
	}
	return next
}

// InterceptPeerDial refuses to dial peers that are not allowed.
func (g *memberGater) InterceptPeerDial(p peer.ID) bool { return g.allowed(p) }

// InterceptAddrDial refuses to dial peers that are not allowed.
func (g *memberGater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.allowed(p) }

// InterceptAccept refuses every inbound connection while no peer at all is
// allowed; otherwise the decision waits for the peer ID.
func (g *memberGater) InterceptAccept(network.ConnMultiaddrs) bool { return g.anyAllowed() }

// InterceptSecured admits an authenticated connection, in either
// direction, only from an allowed peer.
func (g *memberGater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allowed(p)
}

// InterceptUpgraded checks again, in case the member set changed during
// the muxer negotiation.
func (g *memberGater) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	return g.allowed(c.RemotePeer()), 0
}

// SetMembers replaces the set of cluster members, given as peer ID
// strings; this host's own ID is ignored. Connections to peers that are
// neither members nor admitted are closed. IDs that do not parse are
// logged and skipped (they could never connect anyway).
func (h *Host) SetMembers(ids []string) {
	pids := make([]peer.ID, 0, len(ids))
	for _, s := range ids {
		p, err := peer.Decode(s)
		if err != nil {
			h.logger.Warn("member list: not a peer id, skipped", "peer", s, "err", err)
			continue
		}
		pids = append(pids, p)
	}
	h.gater.setMembers(pids)
	h.enforce()
}

// Admit lets the peer id connect until the given time, whether or not it
// is a member (a joiner holding a valid join token). It replaces an
// earlier admission of id, so a time not in the future revokes it. When an
// admission ends, new connections from a peer that is not a member are
// refused and its open connections are closed.
func (h *Host) Admit(id string, until time.Time) {
	p, err := peer.Decode(id)
	if err != nil {
		h.logger.Warn("admit: not a peer id, ignored", "peer", id, "err", err)
		return
	}
	h.gater.admit(p, until)
	h.enforce()
}

// CheckPeerID reports whether id is a valid peer ID string; the error
// wraps hubmesh.ErrInvalid. Callers validate untrusted IDs with it before
// SetMembers or Admit.
func CheckPeerID(id string) error {
	_, err := parsePeerID(id)
	return err
}

// parsePeerID decodes id; the error wraps hubmesh.ErrInvalid.
func parsePeerID(id string) (peer.ID, error) {
	p, err := peer.Decode(id)
	if err != nil {
		return "", fmt.Errorf("peer id %q: %v: %w", id, err, hubmesh.ErrInvalid)
	}
	return p, nil
}

// enforce drops expired admissions, closes the connections of every peer
// no longer allowed, and arms the expiry timer for the next admission to
// end.
func (h *Host) enforce() {
	next := h.gater.prune()

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.wg.Add(1) // Close waits for us
	defer h.wg.Done()
	if h.expiry != nil {
		h.expiry.Stop()
		h.expiry = nil
	}
	if !next.IsZero() {
		// A little past the expiry, so that allowed() already says no.
		h.expiry = time.AfterFunc(time.Until(next)+time.Millisecond, h.enforce)
	}
	h.mu.Unlock()

	for _, p := range h.h.Network().Peers() {
		if h.gater.allowed(p) {
			continue
		}
		h.logger.Info("closing connections to a peer that is no longer admitted", "peer", p.String())
		if err := h.h.Network().ClosePeer(p); err != nil {
			h.logger.Warn("close connections", "peer", p.String(), "err", err)
		}
	}
}

// memberDial marks ctx so that dials made under it skip libp2p's dial
// backoff. The swarm backs off from an address after a failed dial, for
// up to five minutes after repeated failures; that protects a public node
// from hammering strangers, but a cluster member that comes back after a
// restart or a partition must be reachable on the next try (Raft and the
// callers here bound their own retries).
func memberDial(ctx context.Context) context.Context {
	return network.WithForceDirectDial(ctx, "hubmesh cluster member")
}

// Connected reports whether the host has an open connection to the peer
// id right now. Members connect on demand, so false means "no traffic
// lately" as much as "unreachable".
func (h *Host) Connected(id string) bool {
	p, err := peer.Decode(id)
	if err != nil {
		return false
	}
	return h.h.Network().Connectedness(p) == network.Connected
}
