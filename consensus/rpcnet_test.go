package consensus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hubmesh/hubmesh"
)

// rpcNet is an in-process RPC network between nodes: Call looks the target
// up by ID and runs its HandleRPC. Like the mesh's RPC, it carries an error
// across as its most specific hubmesh kind plus the message (nothing else
// of the error survives), reports unknown and cut-off peers and an ended
// ctx as hubmesh.ErrUnavailable, and does not let the caller wait past its
// ctx.
type rpcNet struct {
	mu     sync.Mutex
	nodes  map[string]*Node
	cut    map[string]bool
	frozen map[string]bool
	// held are the requests, per target, that calls made while the
	// target was held left in the network; release delivers them.
	held map[string][]heldCall
}

// heldCall is a request the network holds: who sent it and its bytes.
type heldCall struct {
	from string
	req  []byte
}

func newRPCNet() *rpcNet {
	return &rpcNet{nodes: map[string]*Node{}, cut: map[string]bool{}, frozen: map[string]bool{}, held: map[string][]heldCall{}}
}

// hold makes calls to id keep their requests in the network and never
// answer, as a partition does to the bytes a transport had buffered: the
// caller waits until its ctx ends. release delivers them later.
func (r *rpcNet) hold(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held[id] = []heldCall{}
}

// release stops holding calls to id and delivers the held requests to it,
// as the healed network would after holding them for heldFor (their
// deadlines are moved that far back), returning what its HandleRPC
// answered to each request that had a deadline.
func (r *rpcNet) release(ctx context.Context, id string, heldFor time.Duration) ([]error, error) {
	r.mu.Lock()
	calls, target := r.held[id], r.nodes[id]
	delete(r.held, id)
	r.mu.Unlock()
	var errs []error
	for _, c := range calls {
		var req rpcRequest
		if err := json.Unmarshal(c.req, &req); err != nil {
			return nil, err
		}
		if req.Deadline == 0 {
			_, _ = target.HandleRPC(ctx, c.from, c.req)
			continue
		}
		req.Deadline -= int64(heldFor)
		raw, err := json.Marshal(&req)
		if err != nil {
			return nil, err
		}
		_, err = target.HandleRPC(ctx, c.from, raw)
		errs = append(errs, err)
	}
	return errs, nil
}

// freeze makes calls to id connect but never answer (on), as a frozen or
// partitioned process whose connections stay open does; they end only
// with the caller's ctx.
func (r *rpcNet) freeze(id string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.frozen[id] = on
}

// client returns the RPC client of the node from.
func (r *rpcNet) client(from string) RPCClient { return &rpcClient{net: r, from: from} }

func (r *rpcNet) register(id string, n *Node) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nodes[id] = n
}

// isolate makes every call from or to id fail (on) or work again (off).
func (r *rpcNet) isolate(id string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cut[id] = on
}

type rpcClient struct {
	net  *rpcNet
	from string
}

func (c *rpcClient) Call(ctx context.Context, peerID, protocol string, req []byte) ([]byte, error) {
	if protocol != RPCProtocol {
		return nil, fmt.Errorf("%w: protocol %s not supported", hubmesh.ErrUnavailable, protocol)
	}
	c.net.mu.Lock()
	target, ok := c.net.nodes[peerID]
	cut := c.net.cut[c.from] || c.net.cut[peerID]
	frozen := c.net.frozen[peerID]
	held, holding := c.net.held[peerID]
	if holding {
		c.net.held[peerID] = append(held, heldCall{from: c.from, req: bytes.Clone(req)})
	}
	c.net.mu.Unlock()
	if !ok || cut {
		return nil, fmt.Errorf("call %s: %w: cannot connect", peerID, hubmesh.ErrUnavailable)
	}
	if frozen || holding {
		<-ctx.Done()
		return nil, fmt.Errorf("call %s: %w: %w", peerID, hubmesh.ErrUnavailable, ctx.Err())
	}
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := target.HandleRPC(ctx, c.from, bytes.Clone(req))
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, wireError(r.err)
		}
		return r.out, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("call %s: %w: %w", peerID, hubmesh.ErrUnavailable, ctx.Err())
	}
}

// wireKinds are the errors the RPC layer carries, most specific first.
var wireKinds = []error{
	hubmesh.ErrRepoUnknown, hubmesh.ErrManifestUnknown, hubmesh.ErrBlobUnknown, hubmesh.ErrUploadUnknown,
	hubmesh.ErrManifestBlobUnknown, hubmesh.ErrDigestMismatch, hubmesh.ErrRangeInvalid, hubmesh.ErrSizeInvalid,
	hubmesh.ErrNotFound, hubmesh.ErrExists, hubmesh.ErrInvalid, hubmesh.ErrDenied, hubmesh.ErrNotLeader,
	hubmesh.ErrUnavailable,
}

type remoteError struct {
	kind error
	msg  string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }

func wireError(err error) error {
	for _, k := range wireKinds {
		if errors.Is(err, k) {
			return &remoteError{kind: k, msg: err.Error()}
		}
	}
	return errors.New(err.Error())
}
