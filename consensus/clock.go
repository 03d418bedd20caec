package consensus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hubmesh/hubmesh"
)

// Deadlines of forwarded requests. A follower stops waiting for a
// forwarded request at its deadline and reports the write as failed; the
// leader must not apply a request that reaches it after that (a partition
// heals and the transport delivers what it had buffered). So every
// forwarded request carries its deadline on the leader's own monotonic
// clock, the time since the leader's process opened the node, which no
// wall-clock offset or step affects. The follower learns that clock with
// a round trip (rpcClock) and keeps the reading on its own monotonic
// clock. It takes the reading as of the end of the round trip, so its
// estimate of the leader's clock can only be behind: deadlines come out
// early by at most a round trip, never late. A reading is tied to one run
// of the leader (its epoch): a restarted leader refuses deadlines on its
// previous run's clock, and a refusal makes the follower measure again.
// A request held in the network keeps its old deadline and is refused
// however many were held and for however long. A request that reaches
// the leader in time can still commit after its follower gave up: the
// leader's deadline bounds the wait, not raft.

// clockMaxAge is how long a reading is used before the next request
// measures again.
const clockMaxAge = time.Minute

// errNoClock: the peer does not answer clock requests (an earlier
// version, which checks no deadline either).
var errNoClock = errors.New("peer has no clock request")

// nodeClock is this node's run: its epoch and when it started.
type nodeClock struct {
	epoch   string
	started time.Time // carries the monotonic reading
}

func newNodeClock() nodeClock {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return nodeClock{epoch: hex.EncodeToString(b), started: time.Now()}
}

// peerClocks holds the last reading of each peer's clock.
type peerClocks struct {
	mu    sync.Mutex
	peers map[string]peerClock
}

// peerClock is one reading: the peer's clock (since its start, in its
// run epoch) at the local instant local; none records a peer without
// clock requests.
type peerClock struct {
	remote time.Duration
	epoch  string
	local  time.Time
	none   bool
}

// remoteNow returns the current time on peer's clock and its epoch,
// measuring first when the last reading is missing or old; errNoClock
// when the peer has no clock request.
func (n *Node) remoteNow(ctx context.Context, peer string) (time.Duration, string, error) {
	n.clocks.mu.Lock()
	c, ok := n.clocks.peers[peer]
	n.clocks.mu.Unlock()
	if !ok || time.Since(c.local) >= clockMaxAge {
		var err error
		if c, err = n.measureClock(ctx, peer); err != nil {
			return 0, "", err
		}
	}
	if c.none {
		return 0, "", errNoClock
	}
	return c.remote + time.Since(c.local), c.epoch, nil
}

// measureClock asks peer for its clock and records the reading.
func (n *Node) measureClock(ctx context.Context, peer string) (peerClock, error) {
	body, err := json.Marshal(&rpcRequest{Kind: rpcClock})
	if err != nil {
		return peerClock{}, err
	}
	out, err := n.cfg.RPC.Call(ctx, peer, RPCProtocol, body)
	end := time.Now()
	var c peerClock
	switch {
	case errors.Is(err, hubmesh.ErrInvalid):
		c = peerClock{none: true, local: end} // "unknown kind"
	case err != nil && !isDomainError(err):
		return peerClock{}, fmt.Errorf("consensus rpc %s to %s: %w: %v", rpcClock, peer, hubmesh.ErrUnavailable, err)
	case err != nil:
		return peerClock{}, fmt.Errorf("consensus rpc %s to %s: %w", rpcClock, peer, err)
	default:
		var resp rpcResponse
		if err := json.Unmarshal(out, &resp); err != nil || resp.Epoch == "" {
			return peerClock{}, fmt.Errorf("consensus rpc %s to %s: %w: bad response", rpcClock, peer, hubmesh.ErrUnavailable)
		}
		c = peerClock{remote: time.Duration(resp.Clock), epoch: resp.Epoch, local: end}
	}
	n.clocks.mu.Lock()
	if n.clocks.peers == nil {
		n.clocks.peers = map[string]peerClock{}
	}
	n.clocks.peers[peer] = c
	n.clocks.mu.Unlock()
	return c, nil
}

// forgetClock drops the reading of peer's clock, so that the next request
// to it measures again.
func (n *Node) forgetClock(peer string) {
	n.clocks.mu.Lock()
	delete(n.clocks.peers, peer)
	n.clocks.mu.Unlock()
}

// checkDeadline refuses a request whose deadline, on this node's clock
// of run epoch, has passed (or was set on another run), and returns the
// time left.
func (n *Node) checkDeadline(kind, from, epoch string, deadline time.Duration) (time.Duration, error) {
	if epoch != n.clock.epoch {
		return 0, fmt.Errorf("consensus rpc %s: %w: the deadline is on another run's clock (this node restarted)", kind, hubmesh.ErrUnavailable)
	}
	left := deadline - time.Since(n.clock.started)
	if left <= 0 {
		n.logger.Warn("refused a request that arrived after its caller's deadline (delayed by the network)",
			"kind", kind, "from", from, "late", (-left).Round(time.Millisecond))
		return 0, fmt.Errorf("consensus rpc %s: %w: the request arrived %v after its deadline", kind, hubmesh.ErrUnavailable, (-left).Round(time.Millisecond))
	}
	return left, nil
}
