package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hubmesh/hubmesh"
)

// Audit events and token use are recorded in Raft, but never with one Raft
// write per request: the API plane hands them to an eventBuffer, which
// proposes them in batches (DESIGN.md: hot statistics are aggregated per
// node and flushed periodically).
const (
	auditFlushEvery = time.Second
	touchFlushEvery = 30 * time.Second
	// maxPendingAudit bounds the events kept while Raft cannot take them
	// (no quorum); past it the oldest are dropped and the drop is logged.
	maxPendingAudit = 10000
	// auditBatch is the most events one AppendAudit command carries.
	auditBatch = 500
)

// eventSink is what the buffer proposes to (consensus.Node).
type eventSink interface {
	AppendAudit(ctx context.Context, evs []hubmesh.AuditEvent) error
	TouchTokens(ctx context.Context, used map[string]time.Time) error
}

// eventBuffer collects audit events and access-token use on this node. It
// implements registryapi.Events; its methods never block on Raft.
type eventBuffer struct {
	sink eventSink
	node string
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	seq     uint64
	audit   []hubmesh.AuditEvent
	dropped int
	used    map[string]time.Time
}

func newEventBuffer(sink eventSink, nodeID string, log *slog.Logger) *eventBuffer {
	short := nodeID
	if len(short) > 12 {
		short = short[len(short)-12:]
	}
	return &eventBuffer{sink: sink, node: short, log: log, now: time.Now, used: make(map[string]time.Time)}
}

// Audit records ev. It fills in the ID (time-ordered, unique per node),
// the time and the node when they are empty.
func (b *eventBuffer) Audit(ev hubmesh.AuditEvent) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ev.Time.IsZero() {
		ev.Time = b.now()
	}
	ev.Time = ev.Time.UTC()
	if ev.Node == "" {
		ev.Node = b.node
	}
	if ev.ID == "" {
		b.seq++
		ev.ID = fmt.Sprintf("%020d-%s-%06d", ev.Time.UnixNano(), b.node, b.seq%1000000)
	}
	if len(b.audit) >= maxPendingAudit {
		b.audit = b.audit[1:]
		b.dropped++
	}
	b.audit = append(b.audit, ev)
}

// TokenUsed notes that access token id authenticated a request at at.
func (b *eventBuffer) TokenUsed(id string, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if at.After(b.used[id]) {
		b.used[id] = at.UTC()
	}
}

// Run flushes until ctx ends, then once more with a short deadline.
func (b *eventBuffer) Run(ctx context.Context) error {
	audit := time.NewTicker(auditFlushEvery)
	defer audit.Stop()
	touch := time.NewTicker(touchFlushEvery)
	defer touch.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			b.flushAudit(fctx)
			b.flushTouch(fctx)
			cancel()
			return nil
		case <-audit.C:
			b.flushAudit(ctx)
		case <-touch.C:
			b.flushTouch(ctx)
		}
	}
}

// flushAudit proposes the pending events in batches. Events a failed
// proposal carried go back to the front of the queue: AppendAudit is
// idempotent by ID, so a retry after an unknown outcome stores no copy.
func (b *eventBuffer) flushAudit(ctx context.Context) {
	for {
		b.mu.Lock()
		if b.dropped > 0 {
			b.log.Warn("audit events dropped while the cluster could not take them", "count", b.dropped)
			b.dropped = 0
		}
		n := min(len(b.audit), auditBatch)
		batch := append([]hubmesh.AuditEvent(nil), b.audit[:n]...)
		b.mu.Unlock()
		if n == 0 {
			return
		}
		if err := b.sink.AppendAudit(ctx, batch); err != nil {
			b.log.Debug("audit flush deferred", "events", n, "err", err)
			return
		}
		b.mu.Lock()
		b.audit = b.audit[n:]
		b.mu.Unlock()
	}
}

func (b *eventBuffer) flushTouch(ctx context.Context) {
	b.mu.Lock()
	used := b.used
	b.used = make(map[string]time.Time)
	b.mu.Unlock()
	if len(used) == 0 {
		return
	}
	if err := b.sink.TouchTokens(ctx, used); err != nil {
		b.log.Debug("token use flush deferred", "tokens", len(used), "err", err)
		b.mu.Lock()
		for id, at := range used {
			if at.After(b.used[id]) {
				b.used[id] = at
			}
		}
		b.mu.Unlock()
	}
}
