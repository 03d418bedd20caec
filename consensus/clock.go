package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/hubmesh/hubmesh"
)

// Deadlines of forwarded requests. A follower stops waiting for a
// forwarded request at its deadline and reports the write as failed; the
// leader must not apply a request that reaches it after that (a partition
// heals and the transport delivers what it had buffered). So every
// forwarded request carries its deadline, on the leader's clock: the
// follower learns the leader's clock with a round trip (rpcClock) and
// keeps the estimate on its own monotonic clock, so neither an offset
// between the two wall clocks nor a step of the follower's clock matters.
// A request held in the network keeps its old deadline and is refused
// however many were held and for however long. When the leader's clock
// steps, the requests it refuses make the follower measure again before
// it retries.

// clockMaxAge is how long a measured clock offset is used before the next
// request measures it again.
const clockMaxAge = time.Minute

// peerClocks holds the last measurement of each peer's clock.
type peerClocks struct {
	mu    sync.Mutex
	peers map[string]peerClock
}

// peerClock is one measurement: the peer's wall clock (remote) at the
// local instant local, which carries the monotonic reading.
type peerClock struct {
	remote time.Time
	local  time.Time
}

// remoteNow returns the current time on peer's clock, measuring it first
// when the last measurement is missing or old.
func (n *Node) remoteNow(ctx context.Context, peer string) (time.Time, error) {
	n.clocks.mu.Lock()
	c, ok := n.clocks.peers[peer]
	n.clocks.mu.Unlock()
	if ok && time.Since(c.local) < clockMaxAge {
		return c.remote.Add(time.Since(c.local)), nil
	}
	body, err := json.Marshal(&rpcRequest{Kind: rpcClock})
	if err != nil {
		return time.Time{}, err
	}
	start := time.Now()
	out, err := n.cfg.RPC.Call(ctx, peer, RPCProtocol, body)
	if err != nil {
		if !isDomainError(err) {
			err = fmt.Errorf("%w: %v", hubmesh.ErrUnavailable, err)
		}
		return time.Time{}, fmt.Errorf("consensus rpc %s to %s: %w", rpcClock, peer, err)
	}
	rtt := time.Since(start)
	var resp rpcResponse
	if err := json.Unmarshal(out, &resp); err != nil || resp.Clock == 0 {
		return time.Time{}, fmt.Errorf("consensus rpc %s to %s: %w: bad response", rpcClock, peer, hubmesh.ErrUnavailable)
	}
	// The peer read its clock somewhere in the round trip; the middle is
	// off by at most half of it.
	c = peerClock{remote: time.Unix(0, resp.Clock), local: start.Add(rtt / 2)}
	n.clocks.mu.Lock()
	if n.clocks.peers == nil {
		n.clocks.peers = map[string]peerClock{}
	}
	n.clocks.peers[peer] = c
	n.clocks.mu.Unlock()
	return c.remote.Add(time.Since(c.local)), nil
}

// forgetClock drops the measurement of peer's clock, so that the next
// request to it measures again.
func (n *Node) forgetClock(peer string) {
	n.clocks.mu.Lock()
	delete(n.clocks.peers, peer)
	n.clocks.mu.Unlock()
}

// now is this node's wall clock.
func (n *Node) now() time.Time {
	if n.cfg.clock != nil {
		return n.cfg.clock()
	}
	return time.Now()
}
