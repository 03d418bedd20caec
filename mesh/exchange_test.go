package mesh

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// exNode is one node of an exchange test: host, store and exchange.
type exNode struct {
	dir     string
	host    *Host
	store   *Store
	ex      *Exchange
	members []string // peers admitted by the host's gater
}

func newExNode(t testing.TB, cfg ExchangeConfig) *exNode {
	t.Helper()
	return newExNodeOn(t, cfg, "/ip4/127.0.0.1/tcp/0")
}

// newExNodeOn is newExNode with the host listening on listen only.
func newExNodeOn(t testing.TB, cfg ExchangeConfig, listen ...string) *exNode {
	t.Helper()
	dir := t.TempDir()
	h, err := NewHost(t.Context(), HostConfig{DataDir: dir, ListenAddrs: listen, Logger: cfg.Logger})
	if err != nil {
		t.Fatalf("NewHost: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	store, err := OpenStore(filepath.Join(dir, "blobs"), cfg.Logger)
	if err != nil {
		t.Fatal(err)
	}
	cfg.IndexDir = filepath.Join(dir, "chunks")
	ex, err := NewExchange(t.Context(), h, store, cfg)
	if err != nil {
		t.Fatalf("NewExchange: %v", err)
	}
	t.Cleanup(func() {
		if err := ex.Close(); err != nil {
			t.Errorf("Exchange.Close: %v", err)
		}
	})
	return &exNode{dir: dir, host: h, store: store, ex: ex}
}

// knows makes n and every one of others members of each other's cluster
// and n able to dial them, and returns their peer IDs.
func (n *exNode) knows(t testing.TB, others ...*exNode) []string {
	t.Helper()
	var ids []string
	for _, o := range others {
		got, err := n.host.AddAddrs(o.host.Addrs()...)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got...)
		n.admit(o)
		o.admit(n)
	}
	return ids
}

func (n *exNode) admit(o *exNode) {
	n.members = append(n.members, o.host.ID())
	n.host.SetMembers(n.members)
}

// putBlob stores data on n, indexes it and returns its digest and root.
func (n *exNode) putBlob(t testing.TB, data []byte) (digest.Digest, string) {
	t.Helper()
	d := digest.SHA256.FromBytes(data)
	if _, err := n.store.Put(t.Context(), d, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	root, err := n.ex.ChunkRoot(t.Context(), d)
	if err != nil {
		t.Fatalf("ChunkRoot: %v", err)
	}
	return d, root
}

// dropChunks removes chunks from n's index, so that n no longer serves
// them although it holds the blob.
func (n *exNode) dropChunks(t testing.TB, d digest.Digest, root string, drop func(i int) bool) {
	t.Helper()
	l := n.rootList(t, root)
	for i, s := range l.sums {
		if drop(i) {
			if err := n.ex.index.db.Delete(chunkKey(l.alg, s, d), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func (n *exNode) rootList(t testing.TB, root string) *chunkList {
	t.Helper()
	c, err := cid.Decode(root)
	if err != nil {
		t.Fatal(err)
	}
	sum, _ := sha256Of(c)
	data, ok, err := n.ex.index.rootBlock(sum)
	if err != nil || !ok {
		t.Fatalf("root %s not indexed: %v", root, err)
	}
	l, err := decodeChunkList(data)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// tmpFiles lists what is left in n's store temp dir.
func (n *exNode) tmpFiles(t testing.TB) []string {
	t.Helper()
	ents, err := os.ReadDir(n.store.tmp)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func fetchAll(t testing.TB, n *exNode, d digest.Digest, size int64, root string, providers []string) []byte {
	t.Helper()
	rc, err := n.ex.Fetch(t.Context(), d, size, root, providers)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read fetched blob: %v", err)
	}
	return got
}

func checkStored(t testing.TB, n *exNode, d digest.Digest, want []byte) {
	t.Helper()
	rc, size, err := n.store.Open(t.Context(), d)
	if err != nil {
		t.Fatalf("fetched blob not kept: %v", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if size != int64(len(want)) || !bytes.Equal(got, want) {
		t.Fatalf("stored blob: %d bytes, equal=%v; want %d bytes", size, bytes.Equal(got, want), len(want))
	}
}

func TestExchangeFetchTwoHosts(t *testing.T) {
	t.Parallel()
	cfg := ExchangeConfig{Logger: testLogger(t)}
	a, b := newExNode(t, cfg), newExNode(t, cfg)
	data := randomBytes(t, 5<<20+12345)
	d, root := a.putBlob(t, data)
	ids := b.knows(t, a)

	got := fetchAll(t, b, d, int64(len(data)), root, ids)
	if !bytes.Equal(got, data) {
		t.Fatalf("fetched %d bytes, digest %s; want %d bytes, %s", len(got), digest.SHA256.FromBytes(got), len(data), d)
	}
	checkStored(t, b, d, data)
	if left := b.tmpFiles(t); len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}
	// The fetcher recorded the chunk list: same root, no second read.
	if r, err := b.ex.ChunkRoot(t.Context(), d); err != nil || r != root {
		t.Errorf("ChunkRoot on fetcher = %q, %v; want %q", r, err, root)
	}
	// And it serves the blob now: a third node fetches it from b alone.
	c := newExNode(t, cfg)
	got = fetchAll(t, c, d, int64(len(data)), root, c.knows(t, b))
	if !bytes.Equal(got, data) {
		t.Fatal("blob fetched from the node that fetched it differs")
	}
	// A Fetch of a blob the node holds reads the store.
	got = fetchAll(t, b, d, int64(len(data)), root, nil)
	if !bytes.Equal(got, data) {
		t.Fatal("local Fetch returned different bytes")
	}
}

func TestExchangeFetchFromTwoProviders(t *testing.T) {
	t.Parallel()
	cfg := ExchangeConfig{Logger: testLogger(t), ChunkSize: 64 << 10}
	a, b, c := newExNode(t, cfg), newExNode(t, cfg), newExNode(t, cfg)
	data := randomBytes(t, 5<<20+777)
	d, root := a.putBlob(t, data)
	if _, r := c.putBlob(t, data); r != root {
		t.Fatalf("two nodes derived different roots: %s, %s", root, r)
	}
	ids := b.knows(t, a, c)
	got := fetchAll(t, b, d, int64(len(data)), root, ids)
	if !bytes.Equal(got, data) {
		t.Fatal("fetched bytes differ")
	}
	checkStored(t, b, d, data)
	bid, _ := peer.Decode(b.host.ID())
	t.Logf("bytes sent to the fetcher: a %d, c %d", a.ex.bs.LedgerForPeer(bid).Sent, c.ex.bs.LedgerForPeer(bid).Sent)
}

// TestExchangeChunksFromSeveralPeers proves that one blob is assembled
// from chunks served by different peers: a serves only the even chunks
// and c only the odd ones.
func TestExchangeChunksFromSeveralPeers(t *testing.T) {
	t.Parallel()
	cfg := ExchangeConfig{Logger: testLogger(t), ChunkSize: 64 << 10}
	a, b, c := newExNode(t, cfg), newExNode(t, cfg), newExNode(t, cfg)
	data := randomBytes(t, 2<<20+100)
	d, root := a.putBlob(t, data)
	c.putBlob(t, data)
	a.dropChunks(t, d, root, func(i int) bool { return i%2 == 1 })
	c.dropChunks(t, d, root, func(i int) bool { return i%2 == 0 })

	got := fetchAll(t, b, d, int64(len(data)), root, b.knows(t, a, c))
	if !bytes.Equal(got, data) {
		t.Fatal("fetched bytes differ")
	}
	bid, _ := peer.Decode(b.host.ID())
	sentA, sentC := a.ex.bs.LedgerForPeer(bid).Sent, c.ex.bs.LedgerForPeer(bid).Sent
	if half := uint64(len(data)) / 2; sentA < half-(64<<10) || sentC < half-(64<<10) {
		t.Errorf("bytes sent: a %d, c %d; want about half of %d each", sentA, sentC, len(data))
	}
}

// TestExchangeManyChunks fetches a blob of far more chunks than wants may
// be in flight, and more than bitswap queues per peer.
func TestExchangeManyChunks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		chunks int
		window int
	}{
		{"300 chunks, 16 in flight", 300, 16},
		{"2500 chunks, 256 in flight", 2500, 256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := ExchangeConfig{Logger: testLogger(t), ChunkSize: 1 << 10, MaxWantsInFlight: tc.window, StallTimeout: 20 * time.Second}
			a, b := newExNode(t, cfg), newExNode(t, cfg)
			data := randomBytes(t, tc.chunks<<10-10)
			d, root := a.putBlob(t, data)
			if n := len(a.rootList(t, root).sums); n != tc.chunks {
				t.Fatalf("%d chunks, want %d", n, tc.chunks)
			}
			if got := fetchAll(t, b, d, int64(len(data)), root, b.knows(t, a)); !bytes.Equal(got, data) {
				t.Fatal("fetched bytes differ")
			}
		})
	}
}

// TestExchangeFetchStreams shows that the reader yields bytes before the
// whole blob arrived: the provider serves only the first half of the
// chunks, and the reader still hands out that half before the fetch fails.
func TestExchangeFetchStreams(t *testing.T) {
	t.Parallel()
	cfg := ExchangeConfig{Logger: testLogger(t), ChunkSize: 256 << 10, StallTimeout: time.Second}
	a, b := newExNode(t, cfg), newExNode(t, cfg)
	data := randomBytes(t, 4<<20+5)
	d, root := a.putBlob(t, data)
	a.dropChunks(t, d, root, func(i int) bool { return i >= 8 })

	rc, err := b.ex.Fetch(t.Context(), d, int64(len(data)), root, b.knows(t, a))
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	defer rc.Close()
	half := make([]byte, 8*256<<10)
	if _, err := io.ReadFull(rc, half); err != nil {
		t.Fatalf("reading the first half: %v", err)
	}
	if !bytes.Equal(half, data[:len(half)]) {
		t.Fatal("first half differs")
	}
	n, err := rc.Read(make([]byte, 10))
	if n != 0 || !errors.Is(err, hubmesh.ErrUnavailable) {
		t.Fatalf("Read past what arrived = %d, %v; want 0 and an error wrapping ErrUnavailable", n, err)
	}
	t.Logf("error: %v", err)
	if _, err := b.store.Stat(t.Context(), d); !errors.Is(err, hubmesh.ErrBlobUnknown) {
		t.Errorf("incomplete blob in the store: Stat = %v", err)
	}
	if left := b.tmpFiles(t); len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}
}

func TestExchangeFetchUnavailable(t *testing.T) {
	t.Parallel()
	cfg := ExchangeConfig{Logger: testLogger(t)}
	a, b, c := newExNode(t, cfg), newExNode(t, cfg), newExNode(t, cfg)
	data := randomBytes(t, 100<<10)
	d, root := c.putBlob(t, data) // only c holds it, and b does not know c
	size := int64(len(data))
	noAddrs := c.host.ID()

	t.Run("provider lacks the blob", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, err := b.ex.Fetch(ctx, d, size, root, b.knows(t, a))
		if !errors.Is(err, hubmesh.ErrUnavailable) {
			t.Fatalf("Fetch = %v, want ErrUnavailable", err)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("Fetch took %s with a 2s deadline", el)
		}
		err = b.ex.Replicate(ctx, d, size, root, b.knows(t, a))
		if !errors.Is(err, hubmesh.ErrUnavailable) {
			t.Fatalf("Replicate = %v, want ErrUnavailable", err)
		}
	})
	t.Run("provider unreachable", func(t *testing.T) {
		_, err := b.ex.Fetch(t.Context(), d, size, root, []string{noAddrs})
		if !errors.Is(err, hubmesh.ErrUnavailable) {
			t.Fatalf("Fetch = %v, want ErrUnavailable", err)
		}
	})
	t.Run("no providers", func(t *testing.T) {
		for _, providers := range [][]string{nil, {b.host.ID()}} {
			_, err := b.ex.Fetch(t.Context(), d, size, root, providers)
			if !errors.Is(err, hubmesh.ErrUnavailable) {
				t.Fatalf("Fetch from %v = %v, want ErrUnavailable", providers, err)
			}
		}
	})
	t.Run("bad arguments", func(t *testing.T) {
		for name, tc := range map[string]struct {
			d         digest.Digest
			size      int64
			root      string
			providers []string
			want      error
		}{
			"bad digest":      {"sha256:nothex", size, root, []string{noAddrs}, hubmesh.ErrInvalid},
			"negative size":   {d, -1, root, []string{noAddrs}, hubmesh.ErrSizeInvalid},
			"bad root":        {d, size, "not-a-cid", []string{noAddrs}, hubmesh.ErrInvalid},
			"non-raw root":    {d, size, cid.NewCidV1(cid.DagProtobuf, blockCID([]byte("x")).Hash()).String(), []string{noAddrs}, hubmesh.ErrInvalid},
			"bad provider id": {d, size, root, []string{"not a peer id"}, hubmesh.ErrInvalid},
		} {
			if _, err := b.ex.Fetch(t.Context(), tc.d, tc.size, tc.root, tc.providers); !errors.Is(err, tc.want) {
				t.Errorf("%s: Fetch = %v, want %v", name, err, tc.want)
			}
		}
	})
	t.Run("wrong size", func(t *testing.T) {
		_, err := b.ex.Fetch(t.Context(), d, size+1, root, b.knows(t, c))
		if !errors.Is(err, hubmesh.ErrInvalid) {
			t.Fatalf("Fetch with a size the chunk list contradicts = %v, want ErrInvalid", err)
		}
	})
	if _, err := b.store.Stat(t.Context(), d); !errors.Is(err, hubmesh.ErrBlobUnknown) {
		t.Errorf("Stat after failed fetches = %v", err)
	}
}

// TestExchangeCorruptProvider checks that bytes that do not match are
// never installed: a provider whose blob file rotted, and a chunk list
// that claims a digest its chunks do not have.
func TestExchangeCorruptProvider(t *testing.T) {
	t.Parallel()
	cfg := ExchangeConfig{Logger: testLogger(t), ChunkSize: 64 << 10, StallTimeout: time.Second}
	t.Run("rotten blob file", func(t *testing.T) {
		t.Parallel()
		a, b := newExNode(t, cfg), newExNode(t, cfg)
		data := randomBytes(t, 1<<20)
		d, root := a.putBlob(t, data)
		f, err := os.OpenFile(a.store.path(d), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte{data[300<<10] ^ 0xff}, 300<<10); err != nil {
			t.Fatal(err)
		}
		f.Close()
		rc, err := b.ex.Fetch(t.Context(), d, int64(len(data)), root, b.knows(t, a))
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if !errors.Is(err, hubmesh.ErrUnavailable) {
			t.Fatalf("read = %v, want ErrUnavailable", err)
		}
		if !bytes.Equal(got, data[:len(got)]) || len(got) > 256<<10 {
			t.Errorf("reader yielded %d bytes, want an intact prefix up to the rotten chunk", len(got))
		}
		if _, err := b.store.Stat(t.Context(), d); !errors.Is(err, hubmesh.ErrBlobUnknown) {
			t.Errorf("Stat = %v, want ErrBlobUnknown", err)
		}
	})
	t.Run("chunk list lies about the digest", func(t *testing.T) {
		t.Parallel()
		a, b := newExNode(t, cfg), newExNode(t, cfg)
		data := randomBytes(t, 300<<10)
		real, root := a.putBlob(t, data)
		claimed := digest.SHA256.FromBytes(randomBytes(t, 10))
		l := a.rootList(t, root)
		l.digest = claimed
		forged := l.encode()
		if err := a.ex.index.db.Set(rootKey(sha256Sum(forged)), forged, nil); err != nil {
			t.Fatal(err)
		}
		rc, err := b.ex.Fetch(t.Context(), claimed, int64(len(data)), blockCID(forged).String(), b.knows(t, a))
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		defer rc.Close()
		// The last chunk is named by the claimed digest: no block hashes
		// to it, so it never arrives.
		_, err = io.ReadAll(rc)
		if !errors.Is(err, hubmesh.ErrUnavailable) {
			t.Fatalf("read = %v, want ErrUnavailable", err)
		}
		for _, d := range []digest.Digest{claimed, real} {
			if _, err := b.store.Stat(t.Context(), d); !errors.Is(err, hubmesh.ErrBlobUnknown) {
				t.Errorf("Stat(%s) = %v, want ErrBlobUnknown", d, err)
			}
		}
		if left := b.tmpFiles(t); len(left) != 0 {
			t.Errorf("temp files left: %v", left)
		}
	})
}

// TestExchangeConcurrentFetchesShareOneTransfer starts several Fetch and
// Replicate calls for one blob at once: all get the blob, and the provider
// sends it once.
func TestExchangeConcurrentFetchesShareOneTransfer(t *testing.T) {
	t.Parallel()
	cfg := ExchangeConfig{Logger: testLogger(t), ChunkSize: 256 << 10}
	a, b := newExNode(t, cfg), newExNode(t, cfg)
	data := randomBytes(t, 6<<20+1)
	d, root := a.putBlob(t, data)
	ids := b.knows(t, a)
	size := int64(len(data))

	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for i := range 5 {
		wg.Go(func() {
			if i == 4 {
				errs <- b.ex.Replicate(t.Context(), d, size, root, ids)
				return
			}
			rc, err := b.ex.Fetch(t.Context(), d, size, root, ids)
			if err != nil {
				errs <- err
				return
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err == nil && !bytes.Equal(got, data) {
				err = errors.New("fetched bytes differ")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	checkStored(t, b, d, data)
	bid, _ := peer.Decode(b.host.ID())
	if sent := a.ex.bs.LedgerForPeer(bid).Sent; sent > uint64(size)*3/2 {
		t.Errorf("provider sent %d bytes for a %d-byte blob fetched by 5 callers", sent, size)
	}
}

// TestExchangeReaderClosedEarly checks that a transfer whose reader went
// away still completes and keeps the blob.
func TestExchangeReaderClosedEarly(t *testing.T) {
	t.Parallel()
	cfg := ExchangeConfig{Logger: testLogger(t)}
	a, b := newExNode(t, cfg), newExNode(t, cfg)
	data := randomBytes(t, 3<<20)
	d, root := a.putBlob(t, data)
	ids := b.knows(t, a)
	rc, err := b.ex.Fetch(t.Context(), d, int64(len(data)), root, ids)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if _, err := rc.Read(make([]byte, 1)); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Errorf("Read after Close = %v, want ErrInvalid", err)
	}
	if err := b.ex.Replicate(t.Context(), d, int64(len(data)), root, ids); err != nil {
		t.Fatalf("Replicate: %v", err)
	}
	checkStored(t, b, d, data)
}

func TestExchangeEmptyBlob(t *testing.T) {
	t.Parallel()
	cfg := ExchangeConfig{Logger: testLogger(t)}
	a, b := newExNode(t, cfg), newExNode(t, cfg)
	d, root := a.putBlob(t, nil)
	if got := fetchAll(t, b, d, 0, root, b.knows(t, a)); len(got) != 0 {
		t.Fatalf("fetched %d bytes of an empty blob", len(got))
	}
	checkStored(t, b, d, nil)
}

func TestExchangeChunkRoot(t *testing.T) {
	t.Parallel()
	cfg := ExchangeConfig{Logger: testLogger(t), ChunkSize: 1024}
	a := newExNode(t, cfg)
	data := randomBytes(t, 2600)
	d, root := a.putBlob(t, data)
	l := a.rootList(t, root)
	if l.digest != d || l.size != 2600 || l.chunkSize != 1024 || len(l.sums) != 3 {
		t.Fatalf("chunk list = %s %d bytes, %d-byte chunks, %d sums", l.digest, l.size, l.chunkSize, len(l.sums))
	}
	names := chainNames(t, d, data, 1024)
	for i, want := range [][]byte{data[:1024], data[1024:2048], data[2048:]} {
		if l.sums[i] != names[i] {
			t.Errorf("chunk %d name differs", i)
		}
		blk, err := a.ex.bstore.Get(t.Context(), l.chunkCID(i))
		if err != nil || !bytes.Equal(blk.RawData(), append(l.header(i), want...)) {
			t.Errorf("blockstore Get chunk %d = %v", i, err)
		}
	}
	if _, err := a.ex.ChunkRoot(t.Context(), digest.SHA256.FromString("absent")); !errors.Is(err, hubmesh.ErrBlobUnknown) {
		t.Errorf("ChunkRoot of an absent blob = %v, want ErrBlobUnknown", err)
	}
	if _, err := a.ex.ChunkRoot(t.Context(), "sha256:zz"); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Errorf("ChunkRoot of a bad digest = %v, want ErrInvalid", err)
	}
	// After Forget, and after the blob is deleted, nothing is served.
	if err := a.ex.Forget(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.ex.bstore.Has(t.Context(), l.chunkCID(0)); ok || err != nil {
		t.Errorf("Has after Forget = %v, %v", ok, err)
	}
	root2, err := a.ex.ChunkRoot(t.Context(), d)
	if err != nil || root2 != root {
		t.Fatalf("ChunkRoot after Forget = %q, %v; want %q", root2, err, root)
	}
	if err := a.store.Delete(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.ex.bstore.Has(t.Context(), l.chunkCID(0)); ok || err != nil {
		t.Errorf("Has after the blob was deleted = %v, %v", ok, err)
	}
	if _, err := a.ex.bstore.Get(t.Context(), l.chunkCID(0)); err == nil {
		t.Error("Get after the blob was deleted succeeded")
	}
}

func TestExchangeBlockstoreReadOnly(t *testing.T) {
	t.Parallel()
	a := newExNode(t, ExchangeConfig{Logger: testLogger(t)})
	bs := a.ex.bstore
	if err := bs.Put(t.Context(), nil); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Errorf("Put = %v", err)
	}
	if err := bs.PutMany(t.Context(), nil); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Errorf("PutMany = %v", err)
	}
	if err := bs.DeleteBlock(t.Context(), cid.Undef); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Errorf("DeleteBlock = %v", err)
	}
	if _, err := bs.AllKeysChan(t.Context()); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Errorf("AllKeysChan = %v", err)
	}
	for _, c := range []cid.Cid{cid.Undef, blockCID([]byte("unknown")), cid.NewCidV1(cid.DagCBOR, blockCID([]byte("x")).Hash())} {
		if ok, err := bs.Has(t.Context(), c); ok || err != nil {
			t.Errorf("Has(%s) = %v, %v", c, ok, err)
		}
		if _, err := bs.Get(t.Context(), c); err == nil {
			t.Errorf("Get(%s) succeeded", c)
		}
	}
}

func TestNewExchangeConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	logger := testLogger(t)
	h := newTestHost(t, dir, "/ip4/127.0.0.1/tcp/0")
	store, err := OpenStore(filepath.Join(dir, "blobs"), logger)
	if err != nil {
		t.Fatal(err)
	}
	idx := filepath.Join(dir, "chunks")
	for name, cfg := range map[string]ExchangeConfig{
		"no logger":       {IndexDir: idx},
		"no index dir":    {Logger: logger},
		"chunk too large": {IndexDir: idx, Logger: logger, ChunkSize: MaxChunkSize + chunkAlign},
		"chunk unaligned": {IndexDir: idx, Logger: logger, ChunkSize: 1000},
		"window too wide": {IndexDir: idx, Logger: logger, MaxWantsInFlight: 257},
		"negative stall":  {IndexDir: idx, Logger: logger, StallTimeout: -time.Second},
	} {
		if _, err := NewExchange(t.Context(), h, store, cfg); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("%s: NewExchange = %v, want ErrInvalid", name, err)
		}
	}
}

func TestChunkListEncoding(t *testing.T) {
	t.Parallel()
	data := make([]byte, 2600)
	rand.Read(data)
	d := digest.SHA256.FromBytes(data)
	l, err := chunkBlob(t.Context(), d, int64(len(data)), 1024, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	enc := l.encode()
	back, err := decodeChunkList(enc)
	if err != nil {
		t.Fatal(err)
	}
	if back.digest != d || back.size != 2600 || back.chunkSize != 1024 || !slices.Equal(back.sums, l.sums) {
		t.Fatalf("round trip = %+v", back)
	}
	if !bytes.Equal(back.encode(), enc) {
		t.Fatal("encoding is not deterministic")
	}
	bad := map[string][]byte{
		"empty":         nil,
		"bad magic":     append([]byte("nope"), enc[4:]...),
		"truncated":     enc[:len(enc)-1],
		"trailing":      append(bytes.Clone(enc), 0),
		"version 1":     bytes.Replace(enc, []byte(chunkListMagic+"\x02"), []byte(chunkListMagic+"\x01"), 1),
		"unaligned":     (&chunkList{digest: d, alg: l.alg, size: 0, chunkSize: 1000}).encode(),
		"bad digest":    bytes.Replace(enc, []byte(d.Encoded()[:4]), []byte("zzzz"), 1),
		"short buffer":  []byte(chunkListMagic + "\x01\xff"),
		"no chunk size": (&chunkList{digest: d, alg: l.alg, size: 0, chunkSize: 0}).encode(),
	}
	for name, b := range bad {
		if _, err := decodeChunkList(b); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("%s: decode = %v, want ErrInvalid", name, err)
		}
	}
	// A blob too large for one list at the configured chunk size gets
	// larger chunks.
	big := maxChunks(l.alg)*1024 + 1
	if n := numChunks(big, 1024); n <= maxChunks(l.alg) {
		t.Fatalf("test blob has only %d chunks", n)
	}
	zd, err := digest.SHA256.FromReader(io.LimitReader(zeroReader{}, big))
	if err != nil {
		t.Fatal(err)
	}
	l, err = chunkBlob(t.Context(), zd, big, 1024, io.LimitReader(zeroReader{}, big))
	if err != nil {
		t.Fatal(err)
	}
	if l.chunkSize != 2048 || len(l.encode()) > MaxChunkSize {
		t.Errorf("chunk size %d, list of %d bytes", l.chunkSize, len(l.encode()))
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// TestExchangeServesFetchInProgress shows that a node serves the chunks of
// a blob it is still fetching, so that nodes fetching one new blob at once
// help each other: b fetches from a, which serves only the first half; c,
// which knows only b, gets that half from b's unfinished transfer.
func TestExchangeServesFetchInProgress(t *testing.T) {
	t.Parallel()
	cfg := ExchangeConfig{Logger: testLogger(t), ChunkSize: 256 << 10}
	a, b, c := newExNode(t, cfg), newExNode(t, cfg), newExNode(t, cfg)
	data := randomBytes(t, 4<<20+5)
	d, root := a.putBlob(t, data)
	a.dropChunks(t, d, root, func(i int) bool { return i >= 8 })
	size := int64(len(data))
	half := 8 * 256 << 10

	rb, err := b.ex.Fetch(t.Context(), d, size, root, b.knows(t, a))
	if err != nil {
		t.Fatalf("b: Fetch: %v", err)
	}
	defer rb.Close()
	if _, err := io.ReadFull(rb, make([]byte, half)); err != nil {
		t.Fatalf("b: reading the first half: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	rc, err := c.ex.Fetch(ctx, d, size, root, c.knows(t, b))
	if err != nil {
		t.Fatalf("c: Fetch from b, which is still fetching: %v", err)
	}
	defer rc.Close()
	got := make([]byte, half)
	if _, err := io.ReadFull(rc, got); err != nil {
		t.Fatalf("c: reading the first half from b: %v", err)
	}
	if !bytes.Equal(got, data[:half]) {
		t.Fatal("c: first half differs")
	}
	cid0 := a.rootList(t, root).chunkCID(0)
	if ok, err := b.ex.bstore.Has(t.Context(), cid0); !ok || err != nil {
		t.Errorf("b: Has(chunk 0) during the fetch = %v, %v", ok, err)
	}
}

// TestExchangeAttach joins a transfer under way: the second reader gets the
// same bytes without naming a holder; once the blob is kept there is
// nothing to attach to.
func TestExchangeAttach(t *testing.T) {
	t.Parallel()
	cfg := ExchangeConfig{Logger: testLogger(t), ChunkSize: 256 << 10}
	a, b := newExNode(t, cfg), newExNode(t, cfg)
	data := randomBytes(t, 3<<20+17)
	d, root := a.putBlob(t, data)

	if rc, err := b.ex.Attach(t.Context(), d); rc != nil || err != nil {
		t.Fatalf("Attach before any transfer = %v, %v; want nil, nil", rc, err)
	}
	first, err := b.ex.Fetch(t.Context(), d, int64(len(data)), root, b.knows(t, a))
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	second, err := b.ex.Attach(t.Context(), d)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if second == nil {
		// The transfer may already have ended and kept the blob.
		if _, err := b.store.Stat(t.Context(), d); err != nil {
			t.Fatalf("no transfer to attach to and the blob is not kept: %v", err)
		}
	} else {
		got, err := io.ReadAll(second)
		second.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("attached reader: %d bytes, %v", len(got), err)
		}
	}
	got, err := io.ReadAll(first)
	first.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("fetch reader: %d bytes, %v", len(got), err)
	}
	if _, err := b.store.Stat(t.Context(), d); err != nil {
		t.Fatalf("blob not kept after the reader's EOF: %v", err)
	}
	// The finished transfer leaves the map right after its readers see
	// EOF: attaching in that moment still yields the whole blob.
	if rc, err := b.ex.Attach(t.Context(), d); err != nil {
		t.Fatalf("Attach after the blob was kept: %v", err)
	} else if rc != nil {
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("late attached reader: %d bytes, %v", len(got), err)
		}
	}
}

// TestExchangeAttachWhileHeld attaches to a transfer that cannot finish
// yet (the provider serves only the first half), so Attach must return a
// reader: a TestExchangeAttach run whose transfer ended before Attach
// would also pass with an Attach that always returns nil.
func TestExchangeAttachWhileHeld(t *testing.T) {
	t.Parallel()
	cfg := ExchangeConfig{Logger: testLogger(t), ChunkSize: 256 << 10}
	a, b := newExNode(t, cfg), newExNode(t, cfg)
	data := randomBytes(t, 4<<20+5)
	d, root := a.putBlob(t, data)
	a.dropChunks(t, d, root, func(i int) bool { return i >= 8 })
	half := 8 * 256 << 10

	first, err := b.ex.Fetch(t.Context(), d, int64(len(data)), root, b.knows(t, a))
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	defer first.Close()
	// ctx bounds the attached reader's reads.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	second, err := b.ex.Attach(ctx, d)
	if err != nil || second == nil {
		t.Fatalf("Attach during a held transfer = %v, %v; want a reader", second, err)
	}
	defer second.Close()
	got := make([]byte, half)
	if _, err := io.ReadFull(second, got); err != nil {
		t.Fatalf("attached reader: first half: %v", err)
	}
	if !bytes.Equal(got, data[:half]) {
		t.Fatal("attached reader: first half differs")
	}
	if _, err := b.store.Stat(t.Context(), d); !errors.Is(err, hubmesh.ErrBlobUnknown) {
		t.Fatalf("blob kept although half of it was never served: %v", err)
	}
}
