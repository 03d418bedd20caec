package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
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
				writeUnavailable(w, r, offlineReason)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// writeUnavailable answers 503 with an OCI error body (the Hub API uses
// the same envelope) and Retry-After. On HTTP/1.x the reason also goes in
// the status line (writeReasonStatus), for clients that show only that.
func writeUnavailable(w http.ResponseWriter, r *http.Request, msg string) {
	type wireError struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	body, _ := json.Marshal(struct {
		Errors []wireError `json:"errors"`
	}{[]wireError{{Code: "UNAVAILABLE", Message: msg}}})
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Retry-After", "5")
	if strings.HasPrefix(r.URL.Path, "/v2/") {
		h.Set("Docker-Distribution-Api-Version", "registry/2.0")
	}
	if r.ProtoMajor == 1 && writeReasonStatus(w, http.StatusServiceUnavailable, "Offline ("+msg+")", body) {
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write(body)
}

// reasonLinger bounds how long writeReasonStatus reads what the client
// still sends after the response before it closes the connection.
const reasonLinger = time.Second

// writeReasonStatus writes a whole HTTP/1.1 response with a custom reason
// phrase on the hijacked connection, then closes it. net/http always
// writes the standard phrase ("Service Unavailable"), and the docker CLI
// reads error bodies only for 4xx: for a 5xx it prints the status line
// and nothing else, so the reason must be in that line to be seen. The
// headers are w's, plus Content-Length and Connection: close. It reports
// false, having written nothing, when the connection cannot be hijacked
// (HTTP/2); the caller then answers the ordinary way.
func writeReasonStatus(w http.ResponseWriter, code int, reason string, body []byte) bool {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	defer conn.Close()
	h := w.Header().Clone()
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Connection", "close")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	reason = strings.Map(func(r rune) rune { // a phrase is one line of text
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, reason)
	_ = conn.SetWriteDeadline(time.Now().Add(reasonLinger))
	fmt.Fprintf(brw, "HTTP/1.1 %d %s\r\n", code, reason)
	_ = h.Write(brw)
	_, _ = brw.WriteString("\r\n")
	_, _ = brw.Write(body)
	if brw.Flush() != nil {
		return true
	}
	// Like net/http when it closes a connection whose request body it did
	// not read: half-close, then read (and drop) what the client still
	// sends for a moment, so that it reads the response rather than a
	// connection reset.
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = conn.SetReadDeadline(time.Now().Add(reasonLinger))
	_, _ = io.Copy(io.Discard, io.LimitReader(brw, 256<<10))
	return true
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
