package node

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// Offline operation: a node that has served once and then knows no Raft
// leader (its uplink is gone, or quorum is lost) is offline from its
// cluster. It keeps serving reads from its replicated state and its local
// blobs under the last known tags; /readyz and the cluster status say so;
// a mirror stays ready (it exists to serve while cut off). Writes need
// the leader: once the node has been without one for longer than
// offlineGrace (an election normally takes a second or two, and a write
// then waits for it), they are refused at once with 503 and the reason,
// instead of each waiting out its deadline.
const offlineGrace = 5 * time.Second

// offlineReason is the message of /readyz, the cluster status and the
// 503 that refuses a write.
const offlineReason = "no raft leader: this node is offline from its cluster"

// leaderWatch tracks since when the node has had no leader.
type leaderWatch struct {
	leader func() string // the current leader's ID, "" for none
	now    func() time.Time

	mu     sync.Mutex
	lostAt time.Time // zero while there is a leader
}

// check returns whether the node has no leader, and for how long it has
// been without one (as far as the checks saw).
func (w *leaderWatch) check() (leaderless bool, since time.Duration) {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.leader() != "" {
		w.lostAt = time.Time{}
		return false, 0
	}
	if w.lostAt.IsZero() {
		w.lostAt = now
	}
	return true, now.Sub(w.lostAt)
}

// offline tells whether n is offline from its cluster: it has served,
// and knows no leader now.
func (n *Node) offline() bool {
	leaderless, _ := n.leaders.check()
	return leaderless && n.ready.Load()
}

// refuseWritesOffline wraps an API handler: a request that changes
// state (anything but GET, HEAD and OPTIONS) gets 503 with the reason
// while the node has been offline for longer than offlineGrace.
func (n *Node) refuseWritesOffline(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
		default:
			if leaderless, since := n.leaders.check(); leaderless && since >= offlineGrace && n.ready.Load() {
				writeUnavailable(w, offlineReason)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// writeUnavailable answers 503 with an OCI error body (the Hub API uses
// the same envelope) and Retry-After.
func writeUnavailable(w http.ResponseWriter, msg string) {
	type wireError struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	body, _ := json.Marshal(struct {
		Errors []wireError `json:"errors"`
	}{[]wireError{{Code: "UNAVAILABLE", Message: msg}}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Retry-After", "5")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write(append(body, '\n'))
}

// leaderPollEvery paces watchLeader.
const leaderPollEvery = 250 * time.Millisecond

// watchLeader checks for a leader every leaderPollEvery, so that the time
// without one is measured from when it was lost, not from the first
// request that asked.
func (n *Node) watchLeader(ctx context.Context) error {
	tick := time.NewTicker(leaderPollEvery)
	defer tick.Stop()
	wasOffline := false
	for {
		off := n.offline()
		if off != wasOffline {
			if off {
				n.log.Warn("offline from the cluster: serving reads, refusing writes", "reason", offlineReason)
			} else {
				n.log.Info("back online: the cluster has a leader")
			}
			wasOffline = off
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
