package node

import (
	"context"
	"log/slog"
	"time"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/consensus"
	"github.com/hubmesh/hubmesh/mesh"
)

// repairPage is how many blob records one step of a repair pass reads.
const repairPage = 500

// repairer restores the replication factor. On the leader only, every
// interval it walks the blob records and copies each blob that fewer than
// min(R, voters) live nodes hold to voters that lack it. A node counts as
// dead once it has been unreachable for longer than after; a removed node
// is gone from the replica lists already (the RemoveMember command drops
// it), so its blobs are repaired on the next pass.
type repairer struct {
	blobs    *blobs
	meta     *consensus.Node
	host     *mesh.Host
	after    time.Duration
	interval time.Duration
	log      *slog.Logger

	downSince map[string]time.Time
}

// Run repairs until ctx ends.
func (r *repairer) Run(ctx context.Context) error {
	r.downSince = map[string]time.Time{}
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if !r.meta.IsLeader() {
			clear(r.downSince)
			continue
		}
		if err := r.pass(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("repair pass", "err", err)
		}
	}
}

// pass runs one repair pass.
func (r *repairer) pass(ctx context.Context) error {
	dead, err := r.deadNodes(ctx)
	if err != nil {
		return err
	}
	need := r.blobs.need()
	p := hubmesh.Page{N: repairPage}
	for {
		page, err := r.meta.Blobs(ctx, p)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		for _, info := range page {
			live := 0
			for _, id := range info.Replicas {
				if !dead[id] {
					live++
				}
			}
			// A blob with no replica at all is linked by the pull-through
			// cache and not fetched yet: nothing to repair, nothing lost.
			if live >= need || live == 0 {
				if live == 0 && len(info.Replicas) > 0 {
					r.log.Warn("blob has no live replica", "digest", info.Digest, "replicas", info.Replicas)
				}
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, replicaWait)
			err := r.blobs.restore(rctx, info.Digest, need, dead)
			cancel()
			if err != nil {
				r.log.Warn("repair blob", "digest", info.Digest, "err", err)
				continue
			}
			r.log.Info("repaired blob", "digest", info.Digest, "replicas", need)
		}
		p.Last = page[len(page)-1].Digest.String()
	}
}

// deadNodes probes every member and returns those unreachable for longer
// than r.after.
func (r *repairer) deadNodes(ctx context.Context) (map[string]bool, error) {
	servers, err := r.meta.Servers()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	dead := map[string]bool{}
	seen := map[string]bool{}
	for i, alive := range probePeers(ctx, r.host, r.meta.ID(), servers) {
		id := servers[i].ID
		seen[id] = true
		if alive {
			delete(r.downSince, id)
			continue
		}
		since, ok := r.downSince[id]
		if !ok {
			r.downSince[id] = now
			since = now
		}
		if now.Sub(since) > r.after {
			dead[id] = true
		}
	}
	for id := range r.downSince {
		if !seen[id] {
			delete(r.downSince, id)
		}
	}
	return dead, nil
}
