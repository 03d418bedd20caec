package consensus

import (
	"sync"
	"time"
)

// Late requests. A caller stops waiting for a forwarded request at its
// deadline and reports the write as failed; the leader must not apply a
// request that reaches it after that (a partition heals and the transport
// delivers what it had buffered). The two nodes' clocks need not agree:
// for each caller the leader keeps the smallest recent difference between
// its own clock at a request's arrival and the caller's clock when it
// sent it (the offset of the two clocks plus the fastest transit), and a
// request is late when its difference exceeds that minimum by more than
// the time its caller allowed it. A caller the leader has not heard from
// recently is judged with the clocks taken as equal.

// arrivalWindow is how long an observed difference counts towards a
// caller's minimum (between one and two windows): after a clock step
// backwards on the caller, its requests look late for at most that long.
const arrivalWindow = time.Minute

// arrivals holds the recent minimum difference per caller.
type arrivals struct {
	mu    sync.Mutex
	peers map[string]*minWindow
}

// minWindow is the minimum of the differences observed in the current
// window (since start) and in the one before.
type minWindow struct {
	start     time.Time
	cur, prev time.Duration
	hasPrev   bool
}

// observe records that a request from peer arrived at now, seen after
// diff (now minus the caller's send time), and returns the smallest
// difference recently seen from peer, diff included; known is false when
// peer's earlier requests are too old or there were none.
func (a *arrivals) observe(peer string, now time.Time, diff time.Duration) (fastest time.Duration, known bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.peers == nil {
		a.peers = map[string]*minWindow{}
	}
	w := a.peers[peer]
	switch {
	case w == nil || now.Sub(w.start) >= 2*arrivalWindow || now.Before(w.start):
		a.peers[peer] = &minWindow{start: now, cur: diff}
		return diff, false
	case now.Sub(w.start) >= arrivalWindow:
		w.prev, w.hasPrev = w.cur, true
		w.start, w.cur = now, diff
	default:
		w.cur = min(w.cur, diff)
	}
	fastest = w.cur
	if w.hasPrev {
		fastest = min(fastest, w.prev)
	}
	return fastest, true
}

// lateBy reports by how much a request from peer, sent at sent and given
// up on at deadline (both the caller's clock), arrived after its
// deadline, as far as this node can tell at now; 0 or less is in time.
func (a *arrivals) lateBy(peer string, now, sent, deadline time.Time) time.Duration {
	diff := now.Sub(sent)
	fastest, known := a.observe(peer, now, diff)
	if !known {
		fastest = 0 // the clocks taken as equal, transit as instant
	}
	return diff - fastest - deadline.Sub(sent)
}
