package mesh

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// FuzzDecodeChunkList: a root block comes from a peer. Anything either
// fails with ErrInvalid or decodes into a list whose encoding is the
// block itself (one encoding per list, so equal roots mean equal lists),
// whose chunks cover exactly its size, and whose header and range of
// every chunk can be built without a panic.
func FuzzDecodeChunkList(f *testing.F) {
	for _, size := range []int{0, 1, 300, 4096} {
		data := bytes.Repeat([]byte{byte(size)}, size)
		l, err := chunkBlob(context.Background(), digest.SHA256.FromBytes(data), int64(size), 128, bytes.NewReader(data))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(l.encode())
	}
	f.Add([]byte(chunkListMagic))
	f.Fuzz(func(t *testing.T, block []byte) {
		l, err := decodeChunkList(block)
		if err != nil {
			if !errors.Is(err, hubmesh.ErrInvalid) {
				t.Fatalf("decode: %v, not ErrInvalid", err)
			}
			return
		}
		if got := l.encode(); !bytes.Equal(got, block) {
			t.Fatalf("decoded list encodes to %x, not the block %x", got, block)
		}
		var covered int64
		for i := range l.sums {
			off, n := l.chunkRange(i)
			if off != covered || n <= 0 || n > l.chunkSize {
				t.Fatalf("chunk %d: range %d+%d after %d bytes", i, off, n, covered)
			}
			covered += n
			_ = l.header(i)
			_ = l.chunkCID(i)
		}
		if covered != l.size {
			t.Fatalf("chunks cover %d bytes of %d", covered, l.size)
		}
	})
}
