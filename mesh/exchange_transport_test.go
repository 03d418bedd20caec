package mesh

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/multiformats/go-multihash"
	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
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

// TestChunkBlobSums checks the chunk list computed while reading against
// the chain computed from the whole blob, for sizes around the chunk
// boundaries and both digest algorithms, and that every chunk's block
// hashes to its name under its CID's multihash.
func TestChunkBlobSums(t *testing.T) {
	t.Parallel()
	const chunk = 1024
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		for _, size := range []int{0, 1, chunk - 1, chunk, chunk + 1, 17*chunk + 3} {
			data := randomBytes(t, size)
			d := alg.FromBytes(data)
			l, err := chunkBlob(t.Context(), d, int64(size), chunk, &oneByteReader{data: data})
			if err != nil {
				t.Fatalf("%s %d bytes: %v", alg, size, err)
			}
			want := chainNames(t, d, data, chunk)
			if len(l.sums) != len(want) {
				t.Fatalf("%s %d bytes: %d sums, want %d", alg, size, len(l.sums), len(want))
			}
			for i := range l.sums {
				if l.sums[i] != want[i] {
					t.Errorf("%s %d bytes: name of chunk %d is wrong", alg, size, i)
				}
				off, n := l.chunkRange(i)
				blk := append(l.header(i), data[off:off+n]...)
				mh, err := multihash.Sum(blk, l.alg.code, -1)
				if err != nil {
					t.Fatal(err)
				}
				if c := cid.NewCidV1(cid.Raw, mh); !c.Equals(l.chunkCID(i)) {
					t.Errorf("%s %d bytes: block of chunk %d hashes to %s, want %s", alg, size, i, c, l.chunkCID(i))
				}
			}
		}
	}
	// A short blob fails with the read error; a cancelled context stops;
	// a blob that does not match its digest fails.
	d := digest.SHA256.FromBytes(nil)
	if _, err := chunkBlob(t.Context(), digest.SHA256.FromString("x"), 5, chunk, &oneByteReader{data: []byte("other")}); !errors.Is(err, hubmesh.ErrDigestMismatch) {
		t.Errorf("chunkBlob of a blob that does not match its digest = %v", err)
	}
	if _, err := chunkBlob(t.Context(), d, 5*chunk, chunk, &oneByteReader{data: make([]byte, 2*chunk)}); err == nil {
		t.Error("chunkBlob of a short reader succeeded")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := chunkBlob(ctx, d, 5*chunk, chunk, &oneByteReader{data: make([]byte, 5*chunk)}); err == nil {
		t.Error("chunkBlob with a cancelled context succeeded")
	}
}

// chainNames computes the names of the chunks of data (digest d) from the
// states of one hash over the whole blob.
func chainNames(t testing.TB, d digest.Digest, data []byte, chunk int) []string {
	t.Helper()
	alg, ok := chainAlgOf(d.Algorithm())
	if !ok {
		t.Fatalf("no chain for %s", d)
	}
	var names []string
	for end := chunk; end < len(data); end += chunk {
		h := alg.new()
		h.Write(data[:end])
		names = append(names, string(stateOf(alg, h)))
	}
	if len(data) > 0 {
		names = append(names, string(digestBytes(d)))
	}
	return names
}

// TestChainHasherMalformed checks that blocks that do not follow the
// format hash to nothing a well-formed chain names.
func TestChainHasherMalformed(t *testing.T) {
	t.Parallel()
	const chunk = 1024
	data := randomBytes(t, 3*chunk)
	d := digest.SHA256.FromBytes(data)
	l, err := chunkBlob(t.Context(), d, int64(len(data)), chunk, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	good := append(l.header(1), data[chunk:2*chunk]...)
	if string(chainSum(l.alg, good)) != l.sums[1] {
		t.Fatal("well-formed block does not hash to its name")
	}
	misaligned := append(appendChunkHeader(nil, l.alg, false, chunk+1, []byte(l.sums[0])), data[chunk:2*chunk]...)
	for name, blk := range map[string][]byte{
		"extra bytes":      append(bytes.Clone(good), 1, 2, 3),
		"short":            good[:len(good)-1],
		"header only":      good[:chunkHeaderLen(l.alg)],
		"truncated header": good[:5],
		"bad flag":         append([]byte{7}, good[1:]...),
		"final flag":       append([]byte{1}, good[1:]...),
		"misaligned":       misaligned,
	} {
		if sum := string(chainSum(l.alg, blk)); slices.Contains(l.sums, sum) {
			t.Errorf("%s: hashes to a chunk name", name)
		}
	}
	// Writes in pieces hash like one write.
	h := &chainHasher{alg: l.alg}
	for _, b := range good {
		h.Write([]byte{b})
	}
	if string(h.Sum(nil)) != l.sums[1] {
		t.Error("block written byte by byte hashes differently")
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
