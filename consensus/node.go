package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// Config configures a Node. Zero durations and counts take the defaults
// documented on each field.
type Config struct {
	// Dir is the consensus root: the Raft log and stable store live in
	// Dir/raft, the FSM in Dir/fsm and snapshots in Dir/snapshots.
	Dir string
	// NodeID is the Raft server ID (the node's libp2p peer ID string).
	NodeID string
	// Address is the Raft server address; it must equal
	// StreamLayer.Addr().String() and defaults to it.
	Address string
	// StreamLayer carries Raft RPCs. Open takes ownership of it: Close
	// closes it, and so does a failed Open.
	StreamLayer raft.StreamLayer
	// Logger receives raft's and pebble's logs. Nil discards them.
	Logger *slog.Logger

	// SkipBootstrap leaves a node without state un-bootstrapped, for a node
	// that an existing cluster is about to add. By default a node without
	// state bootstraps a one-voter cluster of itself.
	SkipBootstrap bool

	// HeartbeatTimeout (default 500ms) and ElectionTimeout (default 500ms)
	// bound how long a follower waits for a leader; a one-voter cluster has
	// a leader within about twice that of starting.
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	// LeaderLeaseTimeout defaults to 250ms.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout defaults to raft's 50ms.
	CommitTimeout time.Duration
	// MaxAppendEntries is the most entries per append RPC and per FSM batch
	// (default 256).
	MaxAppendEntries int
	// SnapshotInterval (default 2m) and SnapshotThreshold (default 8192
	// entries) decide when to snapshot; TrailingLogs (default 10240) entries
	// are kept after a snapshot.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// SnapshotRetain is the number of snapshots kept on disk (default 2).
	SnapshotRetain int
	// EnqueueTimeout bounds how long Apply waits to hand a command to raft
	// (default 5s); the wait for the outcome is bounded by the caller's ctx.
	EnqueueTimeout time.Duration
	// TransportTimeout bounds raft RPC I/O (default 10s).
	TransportTimeout time.Duration

	// RPC reaches the other nodes to forward writes and membership changes
	// to the leader and to ask it for read barriers; the node serves the
	// other side in HandleRPC. Nil turns forwarding off: a follower then
	// fails writes with hubmesh.ErrNotLeader and reads only locally.
	RPC RPCClient
	// Self is this node's member record. Its ID defaults to (and must equal)
	// NodeID and its Role defaults to RoleVoter. Whenever the replicated
	// record of this node is missing or has other addresses, the node
	// proposes Self (keeping the recorded role).
	Self Member
	// Local reports whether this node's content store holds a blob.
	// MountBlob records this node as a replica of the mounted blob only when
	// Local says so; nil means it never does (LinkBlob always does, since
	// it links content just committed to this node's store). It must be
	// safe for concurrent use.
	Local func(digest.Digest) bool
	// ForwardTimeout (default 3s) bounds how long a write, a membership
	// change or a read barrier keeps retrying while no leader is known or
	// the leader cannot be reached; then it fails with an error wrapping
	// hubmesh.ErrUnavailable.
	ForwardTimeout time.Duration
	// ReadBarrierTimeout (default 2s) bounds the read barrier that a
	// follower's read waits for after missing locally.
	ReadBarrierTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Address == "" && c.StreamLayer != nil {
		c.Address = c.StreamLayer.Addr().String()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.HeartbeatTimeout, 500*time.Millisecond)
	def(&c.ElectionTimeout, 500*time.Millisecond)
	def(&c.LeaderLeaseTimeout, 250*time.Millisecond)
	def(&c.CommitTimeout, 50*time.Millisecond)
	def(&c.SnapshotInterval, 2*time.Minute)
	def(&c.EnqueueTimeout, 5*time.Second)
	def(&c.TransportTimeout, 10*time.Second)
	def(&c.ForwardTimeout, 3*time.Second)
	def(&c.ReadBarrierTimeout, 2*time.Second)
	if c.Self.ID == "" {
		c.Self.ID = c.NodeID
	}
	if c.Self.Role == "" {
		c.Self.Role = RoleVoter
	}
	if c.MaxAppendEntries == 0 {
		c.MaxAppendEntries = 256
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	if c.SnapshotRetain == 0 {
		c.SnapshotRetain = 2
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("Dir is empty"))
	}
	if c.NodeID == "" {
		errs = append(errs, errors.New("NodeID is empty"))
	}
	if c.StreamLayer == nil {
		errs = append(errs, errors.New("StreamLayer is nil"))
	} else if a := c.StreamLayer.Addr().String(); c.Address != a {
		errs = append(errs, fmt.Errorf("Address %q differs from the stream layer's address %q", c.Address, a))
	}
	if c.Self.ID != c.NodeID {
		errs = append(errs, fmt.Errorf("Self.ID %q differs from NodeID %q", c.Self.ID, c.NodeID))
	} else if err := c.Self.validate(); err != nil {
		errs = append(errs, fmt.Errorf("Self: %w", err))
	}
	if c.MaxAppendEntries < 0 || c.MaxAppendEntries > 1024 {
		errs = append(errs, fmt.Errorf("MaxAppendEntries %d outside 1..1024", c.MaxAppendEntries))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: consensus config: %w", hubmesh.ErrInvalid, err)
	}
	return nil
}

// Node is one member of the metadata Raft group: it proposes commands and
// serves reads from its local copy of the state.
type Node struct {
	cfg    Config
	logger *slog.Logger
	raft   *raft.Raft
	fsm    *stateMachine
	logs   *logStore
	trans  *raft.NetworkTransport
	stream *trackedStream

	// closing is closed when Close starts. raft may accept a command into
	// its buffered apply channel after shutdown and then never answer it, so
	// waits also end here.
	closing chan struct{}
	// clock is this run's clock; clocks are the readings of the clocks
	// of the leaders this node forwarded to (clock.go).
	clock     nodeClock
	clocks    peerClocks
	closeOnce sync.Once
	closeErr  error
	// stop ends the background reconciliation (see run); done is closed
	// when it has returned.
	stop context.CancelFunc
	done chan struct{}
}

// Open opens (or creates) the stores under cfg.Dir and starts Raft. A node
// without any Raft state bootstraps a cluster with itself as the only
// voter, unless cfg.SkipBootstrap is set. Open does not wait for a leader;
// see WaitLeader.
func Open(ctx context.Context, cfg Config) (n *Node, err error) {
	var closers []func() error
	if cfg.StreamLayer != nil {
		closers = append(closers, cfg.StreamLayer.Close)
	}
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				_ = closers[i]()
			}
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	for _, d := range []string{"raft", "fsm", "snapshots"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("consensus: %w", err)
		}
	}
	logs, err := openLogStore(filepath.Join(cfg.Dir, "raft"), cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("consensus: raft log: %w", err)
	}
	closers = append(closers, logs.close)
	fsm, err := openStateMachine(filepath.Join(cfg.Dir, "fsm"), cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("consensus: %w", err)
	}
	closers = append(closers, fsm.close)

	hl := newHclog(cfg.Logger, "raft")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.Dir, "snapshots"), cfg.SnapshotRetain, hl.Named("snapshots"))
	if err != nil {
		return nil, fmt.Errorf("consensus: snapshot store: %w", err)
	}
	stream := newTrackedStream(cfg.StreamLayer)
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: 3,
		Timeout: cfg.TransportTimeout,
		Logger:  hl.Named("net"),
	})
	closers = append(closers, func() error {
		err := trans.Close()
		trans.CloseStreams()
		stream.closeAccepted()
		return err
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hl
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.MaxAppendEntries = cfg.MaxAppendEntries
	rc.BatchApplyCh = true
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.NoSnapshotRestoreOnStart = false
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("consensus: %w: %w", hubmesh.ErrInvalid, err)
	}

	if !cfg.SkipBootstrap {
		existing, err := raft.HasExistingState(logs, logs, snaps)
		if err != nil {
			return nil, fmt.Errorf("consensus: %w", err)
		}
		if !existing {
			err := raft.BootstrapCluster(rc, logs, logs, snaps, trans, raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter,
				ID:       raft.ServerID(cfg.NodeID),
				Address:  raft.ServerAddress(cfg.Address),
			}}})
			if err != nil {
				return nil, fmt.Errorf("consensus: bootstrap: %w", err)
			}
			cfg.Logger.Info("bootstrapped a one-voter cluster", "id", cfg.NodeID)
		}
	}

	r, err := raft.NewRaft(rc, fsm, logs, logs, snaps, trans)
	if err != nil {
		return nil, fmt.Errorf("consensus: start raft: %w", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	n = &Node{
		cfg: cfg, logger: cfg.Logger, raft: r, fsm: fsm, logs: logs,
		trans: trans, stream: stream, closing: make(chan struct{}), clock: newNodeClock(),
		stop: stop, done: make(chan struct{}),
	}
	go n.run(runCtx)
	return n, nil
}

// Close shuts Raft down (closing the stream layer), then closes the
// stores. Reads after Close fail with ErrUnavailable. It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		close(n.closing)
		n.stop()
		<-n.done
		errs := []error{n.raft.Shutdown().Error()} // also closes the transport
		n.trans.CloseStreams()
		n.stream.closeAccepted()
		errs = append(errs, n.fsm.close(), n.logs.close())
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// ID is this node's Raft server ID.
func (n *Node) ID() string { return n.cfg.NodeID }

// Leader returns the ID and address of the current leader, both empty when
// no leader is known.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// observeLeader returns a channel that receives raft's leader changes,
// until stop is called. It holds one pending change: raft drops further
// ones rather than block.
func (n *Node) observeLeader() (ch <-chan raft.Observation, stop func()) {
	c := make(chan raft.Observation, 1)
	obs := raft.NewObserver(c, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(obs)
	return c, func() { n.raft.DeregisterObserver(obs) }
}

// WaitLeader waits until some leader is known (this node or another).
func (n *Node) WaitLeader(ctx context.Context) error {
	ch, stop := n.observeLeader()
	defer stop()
	for {
		if id, _ := n.Leader(); id != "" {
			return nil
		}
		if n.raft.State() == raft.Shutdown {
			return fmt.Errorf("wait for leader: %w: raft is shut down", hubmesh.ErrUnavailable)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for leader: %w: %w", hubmesh.ErrUnavailable, context.Cause(ctx))
		}
	}
}

// Apply proposes c and waits for it to be applied. It returns the result
// of the command (see each command type) or the error the FSM rejected it
// with. On a follower the command is forwarded to the leader through
// Config.RPC; while no leader is known or the leader cannot be reached,
// Apply retries for up to Config.ForwardTimeout and then fails with an
// error wrapping hubmesh.ErrUnavailable. Without Config.RPC a follower
// fails at once with an error wrapping hubmesh.ErrNotLeader.
//
// Raft's own timeout only bounds enqueueing; when ctx ends first, the
// error wraps hubmesh.ErrUnavailable and the outcome is unknown: the
// command may still be applied, so every command is safe to retry.
func (n *Node) Apply(ctx context.Context, c Command) (any, error) {
	if c == nil {
		return nil, fmt.Errorf("apply: %w: nil command", hubmesh.ErrInvalid)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	data, err := Encode(c)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("apply %v: %w: not proposed: %w", c.Type(), hubmesh.ErrUnavailable, context.Cause(ctx))
	}
	return onLeader(ctx, n, "apply "+c.Type().String(),
		func(ctx context.Context) (any, error) { return n.applyLocal(ctx, c.Type(), data) },
		func(ctx context.Context, leader string) (any, error) {
			resp, err := n.call(ctx, leader, &rpcRequest{Kind: rpcApply, Command: data})
			if err != nil {
				return nil, err
			}
			return decodeResult(c.Type(), resp.Result)
		})
}

// applyLocal proposes an encoded command of type t to this node's Raft,
// which must be the leader, and waits for the outcome.
func (n *Node) applyLocal(ctx context.Context, t Type, data []byte) (any, error) {
	select {
	case <-n.closing:
		return nil, fmt.Errorf("apply %v: %w: node is closed", t, hubmesh.ErrUnavailable)
	default:
	}
	f := n.raft.Apply(data, n.cfg.EnqueueTimeout)
	if err := n.wait(ctx, f); err != nil {
		return nil, fmt.Errorf("apply %v: %w", t, err)
	}
	if err, ok := f.Response().(error); ok {
		return nil, err
	}
	return f.Response(), nil
}

// wait waits for f under ctx and until Close, and maps raft's errors to
// the root sentinels.
func (n *Node) wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		return fmt.Errorf("%w: outcome unknown: %w", hubmesh.ErrUnavailable, context.Cause(ctx))
	case <-n.closing:
		return fmt.Errorf("%w: node closed, outcome unknown", hubmesh.ErrUnavailable)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %w", hubmesh.ErrNotLeader, err)
	default: // shut down, enqueue timeout, ...
		return fmt.Errorf("%w: %w", hubmesh.ErrUnavailable, err)
	}
}

// AddVoter adds a voting member (or updates its address). Only the leader
// can do it; elsewhere the error wraps hubmesh.ErrNotLeader.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	f := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.cfg.EnqueueTimeout)
	if err := n.wait(ctx, f); err != nil {
		return fmt.Errorf("add voter %s: %w", id, err)
	}
	return nil
}

// RemoveServer removes a member. Only the leader can do it.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	f := n.raft.RemoveServer(raft.ServerID(id), 0, n.cfg.EnqueueTimeout)
	if err := n.wait(ctx, f); err != nil {
		return fmt.Errorf("remove server %s: %w", id, err)
	}
	return nil
}

// WaitApplied waits until this node's FSM has applied the entry at index
// (see Stats.AppliedIndex), so that local reads reflect it.
func (n *Node) WaitApplied(ctx context.Context, index uint64) error {
	for {
		ch := n.fsm.appliedChanged()
		if n.fsm.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d: %w: %w", index, hubmesh.ErrUnavailable, context.Cause(ctx))
		}
	}
}

// Stats is a point-in-time view of the node for metrics and health checks.
type Stats struct {
	// State is "Follower", "Candidate", "Leader" or "Shutdown".
	State        string
	Term         uint64
	LastLogIndex uint64
	// AppliedIndex is the last entry the FSM has applied on this node.
	AppliedIndex uint64
	// LeaderID is empty when no leader is known.
	LeaderID     string
	Repositories uint64
	Manifests    uint64
	Blobs        uint64
}

// Stats reports Raft state and the size of the replicated state. The
// counts are zero once the node is closed.
func (n *Node) Stats() Stats {
	id, _ := n.Leader()
	s := Stats{
		State:        n.raft.State().String(),
		Term:         n.raft.CurrentTerm(),
		LastLogIndex: n.raft.LastIndex(),
		AppliedIndex: n.fsm.applied.Load(),
		LeaderID:     id,
	}
	s.Repositories, s.Manifests, s.Blobs, _ = n.fsm.counts()
	return s
}
