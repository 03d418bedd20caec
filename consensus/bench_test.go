package consensus

import (
	"strconv"
	"sync/atomic"
	"testing"
)

// BenchmarkApplyPutManifest measures manifest PUT commits through Raft on
// a single node with pebble fsyncs: one proposer, then many concurrent
// ones (where raft batches entries and the FSM applies them per batch).
func BenchmarkApplyPutManifest(b *testing.B) {
	b.Run("serial", func(b *testing.B) { benchPutManifest(b, 0) })
	b.Run("parallel", func(b *testing.B) { benchPutManifest(b, 32) })
}

func benchPutManifest(b *testing.B, parallelism int) {
	n := openNode(b, testConfig(b, b.TempDir(), newTCPNet().listen(b, "node-1")))
	waitLeader(b, n)
	ctx := b.Context()
	layer := blobDesc("layer")
	if err := n.LinkBlob(ctx, "alice/app", layer); err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	put := func() {
		i := strconv.FormatInt(seq.Add(1), 10)
		m := imageManifest("alice/app", i, layer)
		if err := n.PutManifest(ctx, m, []string{"t" + i}); err != nil {
			b.Error(err)
		}
	}
	b.ReportAllocs()
	if parallelism == 0 {
		for b.Loop() {
			put()
		}
	} else {
		b.SetParallelism(parallelism)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				put()
			}
		})
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
	b.StopTimer()
	if st := n.Stats(); st.Manifests != uint64(seq.Load()) {
		b.Fatalf("%d manifests stored, %d put", st.Manifests, seq.Load())
	}
}
