package mesh

import (
	"context"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/opencontainers/go-digest"
)

func TestTCPFirstDialRanker(t *testing.T) {
	t.Parallel()
	tcp := ma.StringCast("/ip4/10.0.0.1/tcp/4001")
	quic := ma.StringCast("/ip4/10.0.0.1/udp/4001/quic-v1")
	ws := ma.StringCast("/ip4/10.0.0.1/tcp/4002/ws")
	other := ma.StringCast("/ip4/10.0.0.1/udp/4003/webrtc-direct")
	delays := func(addrs ...ma.Multiaddr) map[string]time.Duration {
		out := make(map[string]time.Duration)
		for _, d := range tcpFirst(addrs) {
			out[d.Addr.String()] = d.Delay
		}
		return out
	}
	got := delays(quic, tcp, other, ws)
	want := map[string]time.Duration{
		tcp.String():   0,
		ws.String():    0,
		quic.String():  quicFallbackDelay,
		other.String(): 2 * quicFallbackDelay,
	}
	for a, d := range want {
		if got[a] != d {
			t.Errorf("%s: delay %s, want %s (all: %v)", a, got[a], d, got)
		}
	}
	if got := delays(quic); got[quic.String()] != 0 {
		t.Errorf("QUIC alone delayed by %s", got[quic.String()])
	}
}

// TestHostsSettleOnTCPAndTLS checks what two hosts that listen on both
// TCP and QUIC, and offer both TLS and Noise, use between them.
func TestHostsSettleOnTCPAndTLS(t *testing.T) {
	t.Parallel()
	cfg := ExchangeConfig{Logger: testLogger(t)}
	both := []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	a, b := newExNodeOn(t, cfg, both...), newExNodeOn(t, cfg, both...)
	ids := a.knows(t, b)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := a.host.Connect(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	bid, _ := peer.Decode(ids[0])
	conns := a.host.h.Network().ConnsToPeer(bid)
	if len(conns) == 0 {
		t.Fatal("no connection")
	}
	// QUIC is dialed too when TCP has not connected within
	// quicFallbackDelay, which a loaded machine may take: only a TCP
	// connection is required, not the absence of others.
	tcp := 0
	for _, c := range conns {
		if !hasProtocol(c.RemoteMultiaddr(), ma.P_TCP) {
			continue
		}
		tcp++
		if st := c.ConnState(); st.Security != libp2ptls.ID {
			t.Errorf("TCP connection secured with %q, want %q", st.Security, libp2ptls.ID)
		}
	}
	if tcp == 0 {
		t.Errorf("no TCP connection among %v", conns)
	}
}

// TestChunkBlobSums checks the chunk list computed on several goroutines
// against the chunks themselves, for sizes around the chunk boundaries.
func TestChunkBlobSums(t *testing.T) {
	t.Parallel()
	const chunk = 1000
	for _, size := range []int{0, 1, chunk - 1, chunk, chunk + 1, 17*chunk + 3} {
		data := randomBytes(t, size)
		d := digest.SHA256.FromBytes(data)
		l, err := chunkBlob(t.Context(), d, int64(size), chunk, &oneByteReader{data: data})
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if want := int(numChunks(int64(size), chunk)); len(l.sums) != want {
			t.Fatalf("%d bytes: %d sums, want %d", size, len(l.sums), want)
		}
		for i := range l.sums {
			off, n := l.chunkRange(i)
			if l.sums[i] != sha256.Sum256(data[off:off+n]) {
				t.Errorf("%d bytes: sum of chunk %d is wrong", size, i)
			}
		}
	}
	// A short blob fails with the read error; a cancelled context stops.
	d := digest.SHA256.FromBytes(nil)
	if _, err := chunkBlob(t.Context(), d, 5*chunk, chunk, &oneByteReader{data: make([]byte, 2*chunk)}); err == nil {
		t.Error("chunkBlob of a short reader succeeded")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := chunkBlob(ctx, d, 5*chunk, chunk, &oneByteReader{data: make([]byte, 5*chunk)}); err == nil {
		t.Error("chunkBlob with a cancelled context succeeded")
	}
}

// oneByteReader hands out its data one byte per Read, so that chunkBlob's
// reads do not line up with anything.
type oneByteReader struct{ data []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.data[0]
	r.data = r.data[1:]
	return 1, nil
}
