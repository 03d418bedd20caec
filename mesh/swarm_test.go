package mesh

import (
	"bytes"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestExchangeFellowFetchers fetches one blob through two nodes at once:
// both get it whole and keep it, however they split it between them.
func TestExchangeFellowFetchers(t *testing.T) {
	t.Parallel()
	cfg := ExchangeConfig{Logger: testLogger(t), ChunkSize: 64 << 10}
	a, b, c := newExNode(t, cfg), newExNode(t, cfg), newExNode(t, cfg)
	data := randomBytes(t, 8<<20+100)
	d, root := a.putBlob(t, data)
	provB, provC := b.knows(t, a), c.knows(t, a)
	b.knows(t, c)
	c.knows(t, b)
	if err := b.host.Connect(t.Context(), c.host.ID()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	got := make([][]byte, 2)
	for k, n := range []*exNode{b, c} {
		prov := [][]string{provB, provC}[k]
		wg.Go(func() { got[k] = fetchAll(t, n, d, int64(len(data)), root, prov) })
	}
	wg.Wait()
	for k, n := range []*exNode{b, c} {
		if !bytes.Equal(got[k], data) {
			t.Fatalf("fetcher %d: fetched bytes differ", k)
		}
		checkStored(t, n, d, data)
		if left := n.tmpFiles(t); len(left) != 0 {
			t.Errorf("fetcher %d: temp files left: %v", k, left)
		}
	}
	bid, _ := peer.Decode(b.host.ID())
	cid, _ := peer.Decode(c.host.ID())
	sent := a.ex.bs.LedgerForPeer(bid).Sent + a.ex.bs.LedgerForPeer(cid).Sent
	t.Logf("holder sent %d bytes of a %d byte blob to two fetchers", sent, len(data))
	// Alone, each would have taken the whole blob from the holder.
	if sent > uint64(len(data))*7/4 {
		t.Errorf("holder sent %d bytes, want well under twice the %d byte blob: the fetchers did not share", sent, len(data))
	}
}
