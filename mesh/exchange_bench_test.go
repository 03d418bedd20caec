package mesh

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

// BenchmarkExchangeFetch measures a peer fetch of one 64 MiB blob between
// two hosts over TCP on loopback (TLS, yamux): chunk list, chunks with
// bitswap (checked as they arrive), writing and installing on the
// fetcher, reading the blob through the returned reader. The blob is deleted from the fetcher
// between rounds, outside the timer.
func BenchmarkExchangeFetch(b *testing.B) {
	b.Run("tcp", func(b *testing.B) { benchmarkFetch(b, "/ip4/127.0.0.1/tcp/0") })
	b.Run("quic", func(b *testing.B) { benchmarkFetch(b, "/ip4/127.0.0.1/udp/0/quic-v1") })
}

// writerOnly hides every method but Write, so io.CopyBuffer uses its
// buffer.
type writerOnly struct{ io.Writer }

func benchmarkFetch(b *testing.B, listen string) {
	cfg := ExchangeConfig{Logger: slog.New(slog.DiscardHandler)}
	a, f := newExNodeOn(b, cfg, listen), newExNodeOn(b, cfg, listen)
	data := randomBytes(b, 64<<20)
	d, root := a.putBlob(b, data)
	ids := f.knows(b, a)
	size := int64(len(data))
	b.SetBytes(size)
	var cpu, ttfb time.Duration
	b.ResetTimer()
	for range b.N {
		start := processCPU()
		began := time.Now()
		rc, err := f.ex.Fetch(b.Context(), d, size, root, ids)
		if err != nil {
			b.Fatal(err)
		}
		// Read like net/http does (32 KiB at a time) and time the first
		// byte.
		buf := make([]byte, 32<<10)
		n, err := io.ReadFull(rc, buf[:1])
		ttfb += time.Since(began)
		if err == nil {
			var m int64
			m, err = io.CopyBuffer(writerOnly{io.Discard}, rc, buf)
			n += int(m)
		}
		if err != nil || int64(n) != size {
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
	b.ReportMetric(float64(ttfb.Microseconds())/1e3/float64(b.N), "ttfb-ms")
}

// BenchmarkChunkRoot measures computing the chunk list of a 64 MiB blob,
// which a peer waits for before it can fetch the blob's first chunk.
func BenchmarkChunkRoot(b *testing.B) {
	cfg := ExchangeConfig{Logger: slog.New(slog.DiscardHandler)}
	a := newExNode(b, cfg)
	data := randomBytes(b, 64<<20)
	d, _ := a.putBlob(b, data)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if err := a.ex.Forget(b.Context(), d); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := a.ex.ChunkRoot(b.Context(), d); err != nil {
			b.Fatal(err)
		}
	}
}
