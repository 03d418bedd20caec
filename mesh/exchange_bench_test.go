package mesh

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

// BenchmarkExchangeFetch measures a peer fetch of one 64 MiB blob between
// two hosts over TCP on loopback (Noise, yamux): chunk list, chunks with
// bitswap, writing, hashing and installing on the fetcher, reading the
// blob through the returned reader. The blob is deleted from the fetcher
// between rounds, outside the timer.
func BenchmarkExchangeFetch(b *testing.B) {
	cfg := ExchangeConfig{Logger: slog.New(slog.DiscardHandler)}
	a, f := newExNode(b, cfg), newExNode(b, cfg)
	data := randomBytes(b, 64<<20)
	d, root := a.putBlob(b, data)
	ids := f.knows(b, a)
	size := int64(len(data))
	b.SetBytes(size)
	var cpu time.Duration
	b.ResetTimer()
	for range b.N {
		start := processCPU()
		rc, err := f.ex.Fetch(b.Context(), d, size, root, ids)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, rc); err != nil || n != size {
			b.Fatalf("read %d bytes: %v", n, err)
		}
		rc.Close()
		b.StopTimer()
		cpu += processCPU() - start
		if err := f.store.Delete(b.Context(), d); err != nil {
			b.Fatal(err)
		}
		if err := f.ex.Forget(b.Context(), d); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	// CPU time of both nodes per fetch: less sensitive than MB/s to the
	// load of a shared machine.
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
}
