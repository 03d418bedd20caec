package mesh

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// Chunk lists. For peer exchange a blob is cut into chunks of a fixed size
// (the last one shorter). Every chunk is a block whose CID is CIDv1, codec
// raw, multihash sha2-256 of the chunk bytes. The list of a blob's chunks
// is itself a block, the root, whose bytes are (all integers uvarint):
//
//	"hubmesh-chunks" version(=1) len(digest) digest size chunk-size sha256(chunk 0) … sha256(chunk n-1)
//
// with n = ceil(size / chunk-size) and each sum 32 raw bytes. The encoding
// is deterministic, so every node derives the same root CID for the same
// blob and chunk size. The root names the blob digest and size, so a
// fetcher can check that the root it was given describes the blob it
// wants before fetching a single chunk.
const (
	// DefaultChunkSize is the chunk size of blobs exchanged between peers.
	DefaultChunkSize = 1 << 20
	// MaxChunkSize is the largest chunk (and chunk list) size accepted:
	// the block size limit of bitswap.
	MaxChunkSize = 2 << 20

	chunkListMagic   = "hubmesh-chunks"
	chunkListVersion = 1
)

// chunkList is a decoded root block.
type chunkList struct {
	digest    digest.Digest
	size      int64
	chunkSize int64
	sums      [][sha256.Size]byte
}

// numChunks returns how many chunks a blob of size bytes has.
func numChunks(size, chunkSize int64) int64 {
	return (size + chunkSize - 1) / chunkSize
}

// chunkRange returns the offset and length of chunk i.
func (l *chunkList) chunkRange(i int) (off, n int64) {
	off = int64(i) * l.chunkSize
	return off, min(l.chunkSize, l.size-off)
}

// encode returns the root block bytes of l.
func (l *chunkList) encode() []byte {
	var b bytes.Buffer
	b.Grow(len(chunkListMagic) + 4*binary.MaxVarintLen64 + len(l.digest) + len(l.sums)*sha256.Size)
	b.WriteString(chunkListMagic)
	b.Write(binary.AppendUvarint(nil, chunkListVersion))
	b.Write(binary.AppendUvarint(nil, uint64(len(l.digest))))
	b.WriteString(string(l.digest))
	b.Write(binary.AppendUvarint(nil, uint64(l.size)))
	b.Write(binary.AppendUvarint(nil, uint64(l.chunkSize)))
	for _, s := range l.sums {
		b.Write(s[:])
	}
	return b.Bytes()
}

// decodeChunkList parses a root block. Anything that is not a well-formed
// chunk list of a valid digest fails with an error wrapping
// hubmesh.ErrInvalid.
func decodeChunkList(data []byte) (*chunkList, error) {
	bad := func(what string) error {
		return fmt.Errorf("chunk list: %s: %w", what, hubmesh.ErrInvalid)
	}
	rest, ok := bytes.CutPrefix(data, []byte(chunkListMagic))
	if !ok {
		return nil, bad("no magic")
	}
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(rest)
		if n <= 0 {
			return 0, false
		}
		rest = rest[n:]
		return v, true
	}
	if v, ok := uv(); !ok || v != chunkListVersion {
		return nil, bad("unknown version")
	}
	dlen, ok := uv()
	if !ok || dlen > uint64(len(rest)) || dlen > 256 {
		return nil, bad("bad digest length")
	}
	d := digest.Digest(rest[:dlen])
	rest = rest[dlen:]
	if err := checkDigest(d); err != nil {
		return nil, fmt.Errorf("chunk list: %w", err)
	}
	size, ok1 := uv()
	chunkSize, ok2 := uv()
	if !ok1 || !ok2 || size > 1<<62 || chunkSize == 0 || chunkSize > MaxChunkSize {
		return nil, bad("bad sizes")
	}
	n := numChunks(int64(size), int64(chunkSize))
	if int64(len(rest)) != n*sha256.Size {
		return nil, bad(fmt.Sprintf("%d bytes of sums for %d chunks", len(rest), n))
	}
	l := &chunkList{digest: d, size: int64(size), chunkSize: int64(chunkSize), sums: make([][sha256.Size]byte, n)}
	for i := range l.sums {
		copy(l.sums[i][:], rest[i*sha256.Size:])
	}
	return l, nil
}

// rawCID returns the CIDv1 (codec raw) of a block whose sha2-256 is sum.
func rawCID(sum [sha256.Size]byte) cid.Cid {
	mh, _ := multihash.Encode(sum[:], multihash.SHA2_256) // cannot fail for a known code
	return cid.NewCidV1(cid.Raw, mh)
}

// blockCID returns the CIDv1 raw sha2-256 of data.
func blockCID(data []byte) cid.Cid { return rawCID(sha256.Sum256(data)) }

// chunkCID returns the CID of chunk i.
func (l *chunkList) chunkCID(i int) cid.Cid { return rawCID(l.sums[i]) }

// sha256Of returns the sha2-256 digest inside c, and false when c is not a
// CIDv1 raw sha2-256 (the only kind of block the exchange deals in).
func sha256Of(c cid.Cid) ([sha256.Size]byte, bool) {
	var sum [sha256.Size]byte
	if !c.Defined() || c.Version() != 1 || c.Type() != cid.Raw {
		return sum, false
	}
	dec, err := multihash.Decode(c.Hash())
	if err != nil || dec.Code != multihash.SHA2_256 || len(dec.Digest) != sha256.Size {
		return sum, false
	}
	copy(sum[:], dec.Digest)
	return sum, true
}

// maxChunks is the most chunks one root block can list without exceeding
// MaxChunkSize.
const maxChunks = (MaxChunkSize - 512) / sha256.Size

// chunkBlob reads size bytes of blob d from r and returns its chunk list.
// The chunk size is chunkSize, doubled as often as needed (up to
// MaxChunkSize) for the list to fit in one block; a blob too large even
// then fails with an error wrapping hubmesh.ErrSizeInvalid. The chunks
// are read in order and hashed on up to GOMAXPROCS goroutines (at most
// maxHashWorkers): a peer cannot fetch a blob before its holder has the
// list, so a pull that comes right after a push waits for this.
func chunkBlob(ctx context.Context, d digest.Digest, size int64, chunkSize int64, r io.Reader) (*chunkList, error) {
	for numChunks(size, chunkSize) > maxChunks && chunkSize*2 <= MaxChunkSize {
		chunkSize *= 2
	}
	n := numChunks(size, chunkSize)
	if n > maxChunks {
		return nil, fmt.Errorf("blob %s: %d bytes is too large to exchange: %w", d, size, hubmesh.ErrSizeInvalid)
	}
	l := &chunkList{digest: d, size: size, chunkSize: chunkSize, sums: make([][sha256.Size]byte, n)}
	if n == 0 {
		return l, nil
	}
	workers := int(min(int64(runtime.GOMAXPROCS(0)), maxHashWorkers, n))
	type job struct {
		i   int
		buf []byte
	}
	jobs := make(chan job)
	// One buffer being filled while each worker hashes another.
	free := make(chan []byte, workers+1)
	for range workers + 1 {
		free <- make([]byte, chunkSize)
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				l.sums[j.i] = sha256.Sum256(j.buf)
				free <- j.buf[:cap(j.buf)]
			}
		})
	}
	var err error
	for i := range l.sums {
		if err = ctx.Err(); err != nil {
			break
		}
		buf := <-free
		_, m := l.chunkRange(i)
		if _, rerr := io.ReadFull(r, buf[:m]); rerr != nil {
			err = fmt.Errorf("blob %s: read chunk %d: %w", d, i, rerr)
			break
		}
		jobs <- job{i: i, buf: buf[:m]}
	}
	close(jobs)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	return l, nil
}

// maxHashWorkers bounds the goroutines chunkBlob hashes on.
const maxHashWorkers = 4
