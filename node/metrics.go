package node

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubmesh/hubmesh/consensus"
	"github.com/hubmesh/hubmesh/mesh"
)

// nodeCollector exposes Raft and blob store state, read at scrape time.
type nodeCollector struct {
	meta  *consensus.Node
	store *mesh.Store

	raftState    *prometheus.Desc
	raftTerm     *prometheus.Desc
	raftLast     *prometheus.Desc
	raftApplied  *prometheus.Desc
	storeBlobs   *prometheus.Desc
	storeBytes   *prometheus.Desc
	repositories *prometheus.Desc
}

func newNodeCollector(meta *consensus.Node, store *mesh.Store) *nodeCollector {
	return &nodeCollector{
		meta:         meta,
		store:        store,
		raftState:    prometheus.NewDesc("hubmesh_raft_state", "Raft state of this node (1 for the current state).", []string{"state"}, nil),
		raftTerm:     prometheus.NewDesc("hubmesh_raft_term", "Current Raft term.", nil, nil),
		raftLast:     prometheus.NewDesc("hubmesh_raft_last_log_index", "Index of the last Raft log entry.", nil, nil),
		raftApplied:  prometheus.NewDesc("hubmesh_raft_applied_index", "Index of the last entry applied to the FSM.", nil, nil),
		storeBlobs:   prometheus.NewDesc("hubmesh_store_blobs", "Blobs in the local content store.", nil, nil),
		storeBytes:   prometheus.NewDesc("hubmesh_store_bytes", "Bytes in the local content store.", nil, nil),
		repositories: prometheus.NewDesc("hubmesh_repositories", "Repositories in the replicated state.", nil, nil),
	}
}

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.meta.Stats()
	for _, s := range []string{"Follower", "Candidate", "Leader", "Shutdown"} {
		v := 0.0
		if st.State == s {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.raftState, prometheus.GaugeValue, v, s)
	}
	ch <- prometheus.MustNewConstMetric(c.raftTerm, prometheus.GaugeValue, float64(st.Term))
	ch <- prometheus.MustNewConstMetric(c.raftLast, prometheus.GaugeValue, float64(st.LastLogIndex))
	ch <- prometheus.MustNewConstMetric(c.raftApplied, prometheus.GaugeValue, float64(st.AppliedIndex))
	ch <- prometheus.MustNewConstMetric(c.repositories, prometheus.GaugeValue, float64(st.Repositories))
	files, bytes := c.store.Size()
	ch <- prometheus.MustNewConstMetric(c.storeBlobs, prometheus.GaugeValue, float64(files))
	ch <- prometheus.MustNewConstMetric(c.storeBytes, prometheus.GaugeValue, float64(bytes))
}
