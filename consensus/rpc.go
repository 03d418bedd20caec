package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hubmesh/hubmesh"
)

// RPCProtocol is the protocol under which nodes call each other's
// HandleRPC.
const RPCProtocol = "/hubmesh/consensus/1.0.0"

// RPCClient sends one request to another node and returns its answer.
// Errors that the remote handler returned must come back matching the same
// hubmesh sentinel under errors.Is; transport failures (cannot connect,
// reset, ctx ended) must wrap hubmesh.ErrUnavailable. *mesh.Host
// satisfies it.
type RPCClient interface {
	Call(ctx context.Context, peerID, protocol string, req []byte) ([]byte, error)
}

// RPC request kinds. Only the leader serves them; elsewhere the answer is
// an error wrapping hubmesh.ErrNotLeader and the caller retries.
const (
	rpcApply     = "apply"      // Command: an encoded command -> Result
	rpcJoin      = "join"       // Member -> nothing (AddMember)
	rpcRemove    = "remove"     // ID -> nothing (RemoveMember)
	rpcReadIndex = "read-index" // -> Index the caller must have applied
	rpcClock     = "clock"      // -> Clock and Epoch of this node (any member answers)
)

// rpcRequest is the JSON body of a request to HandleRPC.
type rpcRequest struct {
	Kind    string  `json:"kind"`
	Command []byte  `json:"command,omitempty"`
	Member  *Member `json:"member,omitempty"`
	ID      string  `json:"id,omitempty"`
	// Deadline is when the caller stops waiting for the answer and
	// reports the write as not done, on the leader's clock of run Epoch
	// (nanoseconds since it started) as the caller estimates it. The
	// leader refuses a request that reaches it later (see clock.go).
	Deadline int64  `json:"deadline,omitempty"`
	Epoch    string `json:"epoch,omitempty"`
}

// rpcResponse is the JSON body of a successful answer. Errors travel as
// the RPC layer's errors.
type rpcResponse struct {
	// Result is the JSON of an applied command's result, if it has one.
	Result json.RawMessage `json:"result,omitempty"`
	Index  uint64          `json:"index,omitempty"`
	// Clock and Epoch answer rpcClock: nanoseconds since the answering
	// node's run started, and that run's epoch.
	Clock int64  `json:"clock,omitempty"`
	Epoch string `json:"epoch,omitempty"`
}

// maxRPCRequest bounds a request: a command carries at most a 4 MiB
// manifest, base64-encoded in the JSON.
const maxRPCRequest = 8 << 20

// HandleRPC serves a request from the node from (its peer ID): a
// forwarded command, a membership change or a read-index query. Only
// members of the cluster may call it (others get an error wrapping
// hubmesh.ErrDenied), and only the leader serves it (elsewhere the error
// wraps hubmesh.ErrNotLeader). The node registers it with the mesh host
// under RPCProtocol.
func (n *Node) HandleRPC(ctx context.Context, from string, req []byte) ([]byte, error) {
	if len(req) > maxRPCRequest {
		return nil, fmt.Errorf("consensus rpc: %w: request of %d bytes", hubmesh.ErrInvalid, len(req))
	}
	var r rpcRequest
	if err := json.Unmarshal(req, &r); err != nil {
		return nil, fmt.Errorf("consensus rpc: %w: %v", hubmesh.ErrInvalid, err)
	}
	if !n.isPeer(from) {
		return nil, fmt.Errorf("consensus rpc %s: %w: %q is not a member", r.Kind, hubmesh.ErrDenied, from)
	}
	if r.Kind == rpcClock {
		return json.Marshal(&rpcResponse{Clock: int64(time.Since(n.clock.started)), Epoch: n.clock.epoch})
	}
	if !n.IsLeader() {
		id, _ := n.Leader()
		return nil, fmt.Errorf("consensus rpc %s: %w (leader %q)", r.Kind, hubmesh.ErrNotLeader, id)
	}
	// The caller stops waiting after its own forward timeout; do not hold
	// raft futures for much longer than that, and do not start what the
	// caller has already given up on.
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ForwardTimeout)
	defer cancel()
	if r.Epoch != "" {
		left, err := n.checkDeadline(r.Kind, from, r.Epoch, time.Duration(r.Deadline))
		if err != nil {
			return nil, err
		}
		var cancelDL context.CancelFunc
		ctx, cancelDL = context.WithTimeout(ctx, left)
		defer cancelDL()
	}
	var resp rpcResponse
	switch r.Kind {
	case rpcApply:
		c, err := Decode(r.Command)
		if err != nil {
			return nil, err
		}
		if err := c.validate(); err != nil {
			return nil, err
		}
		res, err := n.applyLocal(ctx, c.Type(), r.Command)
		if err != nil {
			return nil, err
		}
		if res != nil {
			if resp.Result, err = json.Marshal(res); err != nil {
				return nil, fmt.Errorf("consensus rpc apply %v: encode result: %w", c.Type(), err)
			}
		}
	case rpcJoin:
		if r.Member == nil {
			return nil, fmt.Errorf("consensus rpc join: %w: no member", hubmesh.ErrInvalid)
		}
		if err := r.Member.validate(); err != nil {
			return nil, err
		}
		if _, err := n.addMemberLocal(ctx, *r.Member); err != nil {
			return nil, err
		}
	case rpcRemove:
		if err := checkNode(r.ID, true); err != nil {
			return nil, err
		}
		if _, err := n.removeMemberLocal(ctx, r.ID); err != nil {
			return nil, err
		}
	case rpcReadIndex:
		idx, err := n.readIndex(ctx)
		if err != nil {
			return nil, err
		}
		resp.Index = idx
	default:
		return nil, fmt.Errorf("consensus rpc: %w: unknown kind %q", hubmesh.ErrInvalid, r.Kind)
	}
	return json.Marshal(&resp)
}

// isPeer reports whether id is in the Raft configuration or has a member
// record. Both are checked: a joiner gets its record before it enters the
// configuration, and a leaving node leaves the configuration before its
// record goes.
func (n *Node) isPeer(id string) bool {
	if id == "" {
		return false
	}
	if servers, err := n.configuration(); err == nil {
		if _, ok := findServer(servers, id); ok {
			return true
		}
	}
	_, ok, err := n.fsm.member(id)
	return err == nil && ok
}

// call sends req to the leader. Failures that match no hubmesh sentinel
// are transport failures of an RPC client that does not classify them:
// they are reported as hubmesh.ErrUnavailable so that the caller retries.
func (n *Node) call(ctx context.Context, leader string, req *rpcRequest) (*rpcResponse, error) {
	if dl, ok := ctx.Deadline(); ok {
		now, epoch, err := n.remoteNow(ctx, leader)
		switch {
		case err == nil:
			req.Deadline, req.Epoch = int64(now+time.Until(dl)), epoch
		case errors.Is(err, errNoClock):
			// A leader of an earlier version checks no deadline: send
			// none.
		default:
			return nil, err
		}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("consensus rpc %s: %w", req.Kind, err)
	}
	out, err := n.cfg.RPC.Call(ctx, leader, RPCProtocol, body)
	if err != nil {
		if errors.Is(err, hubmesh.ErrUnavailable) || !isDomainError(err) {
			// Refused as late (or another run's), or not delivered:
			// measure again before the next request.
			n.forgetClock(leader)
		}
		if !isDomainError(err) {
			return nil, fmt.Errorf("consensus rpc %s to %s: %w: %v", req.Kind, leader, hubmesh.ErrUnavailable, err)
		}
		return nil, err
	}
	var resp rpcResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		return nil, fmt.Errorf("consensus rpc %s to %s: %w: bad response: %v", req.Kind, leader, hubmesh.ErrUnavailable, err)
	}
	return &resp, nil
}

func isDomainError(err error) bool {
	for _, s := range []error{hubmesh.ErrNotFound, hubmesh.ErrExists, hubmesh.ErrInvalid,
		hubmesh.ErrDenied, hubmesh.ErrNotLeader, hubmesh.ErrUnavailable} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// decodeResult turns the JSON result of a forwarded command back into the
// value the FSM returned for it.
func decodeResult(t Type, raw json.RawMessage) (any, error) {
	switch t {
	case TypeMountBlob:
		return decodeResultAs[hubmesh.Descriptor](t, raw)
	case TypeUpdateUser:
		return decodeResultAs[hubmesh.User](t, raw)
	case TypeUpdateRepository:
		return decodeResultAs[hubmesh.Repository](t, raw)
	case TypeUpdateWebhook:
		return decodeResultAs[hubmesh.Webhook](t, raw)
	case TypeRecordWebhookAttempt:
		return decodeResultAs[WebhookAttemptResult](t, raw)
	case TypeQueueBuilds:
		return decodeResultAs[[]hubmesh.Build](t, raw)
	case TypeClaimBuild, TypeUpdateBuild, TypeCancelBuild:
		return decodeResultAs[hubmesh.Build](t, raw)
	}
	return nil, nil
}

func decodeResultAs[T any](t Type, raw json.RawMessage) (any, error) {
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("apply %v: %w: bad result from the leader: %v", t, hubmesh.ErrUnavailable, err)
	}
	return v, nil
}

// Backoff between attempts to reach a leader.
const (
	forwardBackoffMin = 20 * time.Millisecond
	forwardBackoffMax = 250 * time.Millisecond
)

// onLeader runs an operation on the leader: local when this node leads,
// remote (through Config.RPC) when another node does. While there is no
// leader, or it cannot be reached, or leadership moves, it retries with a
// short backoff for up to Config.ForwardTimeout, then fails with an error
// wrapping hubmesh.ErrUnavailable. Any other outcome is returned as is.
// Without Config.RPC it makes exactly one local attempt.
func onLeader[T any](ctx context.Context, n *Node, op string,
	local func(context.Context) (T, error), remote func(ctx context.Context, leader string) (T, error)) (T, error) {
	var zero T
	if n.cfg.RPC == nil {
		return local(ctx)
	}
	deadline := time.Now().Add(n.cfg.ForwardTimeout)
	backoff := forwardBackoffMin
	var last error
	for {
		select {
		case <-n.closing:
			return zero, fmt.Errorf("%s: %w: node is closed", op, hubmesh.ErrUnavailable)
		default:
		}
		var res T
		var err error
		leader, _ := n.Leader()
		switch {
		case n.IsLeader():
			res, err = local(ctx)
		case leader == "" || leader == n.cfg.NodeID:
			// Just stepped down, raft may still name this node for a
			// moment: as good as no leader.
			err = fmt.Errorf("%w: no leader known", hubmesh.ErrUnavailable)
		default:
			actx, cancel := context.WithDeadline(ctx, deadline)
			stop := n.cancelOnNewLeader(actx, leader, cancel)
			res, err = remote(actx, leader)
			stop()
			cancel()
		}
		if err == nil {
			return res, nil
		}
		if !errors.Is(err, hubmesh.ErrNotLeader) && !errors.Is(err, hubmesh.ErrUnavailable) {
			return zero, err
		}
		last = err
		if ctx.Err() != nil {
			return zero, fmt.Errorf("%s: %w: %w (last attempt: %v)", op, hubmesh.ErrUnavailable, context.Cause(ctx), last)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return zero, fmt.Errorf("%s: %w: no leader reachable within %v (last attempt: %v)", op, hubmesh.ErrUnavailable, n.cfg.ForwardTimeout, last)
		}
		t := time.NewTimer(min(backoff, wait))
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-n.closing:
		}
		t.Stop()
		backoff = min(2*backoff, forwardBackoffMax)
	}
}

// leaderWatchInterval paces the check, while a call is forwarded, that
// the node it went to is still the leader this node knows.
const leaderWatchInterval = 25 * time.Millisecond

// cancelOnNewLeader cancels a call forwarded to leader as soon as this
// node learns of another leader. A leader that is cut off (partitioned,
// frozen) keeps the call open without answering; the others elect a new
// leader within an election timeout, and the call is better retried there
// than held until the forwarding deadline. The caller must call stop once
// the call returned.
func (n *Node) cancelOnNewLeader(ctx context.Context, leader string, cancel context.CancelFunc) (stop func()) {
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(leaderWatchInterval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if id, _ := n.Leader(); id != "" && id != leader {
				cancel()
				return
			}
		}
	}()
	return func() { close(done) }
}

// ReadBarrier makes this node's state at least as new as every write the
// leader has acknowledged before the call. On the leader it verifies the
// leadership; on a follower it asks the leader for its read index and
// waits until the local FSM has applied it. It fails with an error
// wrapping hubmesh.ErrUnavailable when no leader answers within ctx and
// Config.ForwardTimeout, or when a follower has no Config.RPC.
func (n *Node) ReadBarrier(ctx context.Context) error {
	if n.cfg.RPC == nil && !n.IsLeader() {
		return fmt.Errorf("read barrier: %w: no leader to ask (forwarding is off)", hubmesh.ErrUnavailable)
	}
	idx, err := n.leaderReadIndex(ctx)
	if err != nil {
		return err
	}
	return n.WaitApplied(ctx, idx)
}

// leaderReadIndex asks the leader (or, on the leader, itself) for the index
// this node must apply to see every write acknowledged so far.
func (n *Node) leaderReadIndex(ctx context.Context) (uint64, error) {
	return onLeader(ctx, n, "read barrier", n.readIndex,
		func(ctx context.Context, leader string) (uint64, error) {
			resp, err := n.call(ctx, leader, &rpcRequest{Kind: rpcReadIndex})
			if err != nil {
				return 0, err
			}
			return resp.Index, nil
		})
}

// readIndex is the leader's side of a read barrier: after confirming that
// it still leads, the index up to which a follower must apply to see every
// write acknowledged so far.
func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	applied := n.fsm.applied.Load()
	commit := n.raft.CommitIndex()
	if err := n.wait(ctx, n.raft.VerifyLeader()); err != nil {
		return 0, fmt.Errorf("read index: %w", err)
	}
	return max(applied, n.lastFSMIndex(commit)), nil
}

// maxIndexScan bounds the walk of lastFSMIndex; raft writes at most one
// no-op per term, so a longer run of entries the FSM never sees does not
// happen in practice.
const maxIndexScan = 64

// lastFSMIndex returns the greatest index at or below i of a log entry
// that reaches the FSM (commands and configuration changes), or 0 when
// none is found nearby. raft keeps no-op and barrier entries from the FSM,
// so a follower's applied index may never equal theirs.
func (n *Node) lastFSMIndex(i uint64) uint64 {
	first, err := n.logs.FirstIndex()
	if err != nil {
		return 0
	}
	for steps := 0; i > 0 && i >= first && steps < maxIndexScan; i, steps = i-1, steps+1 {
		var l raft.Log
		if err := n.logs.GetLog(i, &l); err != nil {
			return 0
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return i
		}
	}
	return 0
}

// readFresh runs read on the local state. When a follower misses locally
// (miss says so), the data may simply not have arrived yet: it waits for
// a read barrier, bounded by Config.ReadBarrierTimeout, and reads again.
// If the leader cannot be asked (partition, no quorum), the local answer
// stands: a node cut off keeps serving what it has. If the leader answered
// but this node has not caught up within the bound (just restarted, or
// installing a snapshot), the miss may be false, so the read fails with
// ErrUnavailable (503, retry) rather than a 404 that is not true.
func readFresh[T any](ctx context.Context, n *Node, read func() (T, error), miss func(T, error) bool) (T, error) {
	v, err := read()
	if !miss(v, err) || n.cfg.RPC == nil || n.IsLeader() {
		return v, err
	}
	bctx, cancel := context.WithTimeout(ctx, n.cfg.ReadBarrierTimeout)
	defer cancel()
	idx, ierr := n.leaderReadIndex(bctx)
	if ierr != nil {
		n.logger.Debug("read barrier failed; answering from local state", "error", ierr)
		return v, err
	}
	if werr := n.WaitApplied(bctx, idx); werr != nil {
		var zero T
		return zero, fmt.Errorf("this node is catching up with the leader (applied %d of %d): %w",
			n.fsm.applied.Load(), idx, hubmesh.ErrUnavailable)
	}
	return read()
}

// notFound is the miss test of reads that fail when the item is absent.
func notFound[T any](_ T, err error) bool { return errors.Is(err, hubmesh.ErrNotFound) }
