package mesh

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// Chunk lists. For peer exchange a blob is cut into chunks of a fixed size
// (the last one shorter), a multiple of the hash block size of the blob's
// digest algorithm. The chunks are chained on the blob's own digest: the
// hash state after chunk i (the internal state of SHA-256 or SHA-512
// after absorbing the blob's first (i+1)*chunk-size bytes) names chunk i,
// and the last chunk is named by the blob digest itself. Chunk i travels
// as a block of
//
//	final(1 byte: 1 for the last chunk) offset(8 bytes, big endian) state-before(32 or 64 bytes) chunk bytes
//
// whose CID is CIDv1, codec raw, multihash chainCode(alg) over the state
// after it: the multihash function (registered below) resumes the digest
// from state-before at offset, absorbs the chunk bytes and outputs the new
// state, or the finished digest for the last chunk. A peer that receives
// a chunk has bitswap hash it under its CID (one pass of the blob's own
// hash function), and checks that state-before is the state the chunk
// list gives before that chunk: by induction every chunk then holds the
// bytes of the blob whose digest was asked for, without a second pass
// over the blob to verify the whole digest. The header is built from the
// chunk list on the serving side; the bytes after it are a range of the
// blob file, so nothing is stored twice.
//
// The list of a blob's chunks is itself a block, the root (CIDv1 raw
// sha2-256 of its bytes), whose bytes are (integers uvarint):
//
//	"hubmesh-chunks" version(=2) len(digest) digest size chunk-size state(chunk 0) … state(chunk n-2)
//
// with n = ceil(size / chunk-size) and each state 32 (sha256) or 64
// (sha512) raw bytes; the name of chunk n-1 is the digest. The encoding is
// deterministic, so every node derives the same root CID for the same
// blob and chunk size. The root names the blob digest and size, so a
// fetcher can check that the root it was given describes the blob it
// wants before fetching a single chunk.
const (
	// DefaultChunkSize is the chunk size of blobs exchanged between peers.
	DefaultChunkSize = 1 << 20
	// MaxChunkSize is the largest chunk (and chunk list) size accepted:
	// the block size limit of bitswap (a chunk's block is a header of
	// chunkHeaderMax bytes longer).
	MaxChunkSize = 2 << 20
	// chunkAlign is what a chunk size must be a multiple of: the hash
	// block size of SHA-512 (and twice that of SHA-256), so that every
	// chunk but the last ends on a hash block boundary.
	chunkAlign = 128

	chunkListMagic   = "hubmesh-chunks"
	chunkListVersion = 2
)

// Multihash codes of chained chunks, in the multicodec private use range.
// They mean something only between hubmesh nodes.
const (
	mhSHA256Chain = 0x300c01
	mhSHA512Chain = 0x300c02
)

// chainAlg is a digest algorithm chunks can be chained on.
type chainAlg struct {
	id     byte // in index keys
	code   uint64
	digest digest.Algorithm
	size   int // bytes of a state and of the digest
	block  int // hash block size
	magic  string
	new    func() hash.Hash
	iv     []byte // the state before the first byte
}

var chainAlgs = []*chainAlg{
	{id: 1, code: mhSHA256Chain, digest: digest.SHA256, size: sha256.Size, block: sha256.BlockSize, magic: "sha\x03", new: sha256.New},
	{id: 2, code: mhSHA512Chain, digest: digest.SHA512, size: sha512.Size, block: sha512.BlockSize, magic: "sha\x07", new: sha512.New},
}

func init() {
	for _, a := range chainAlgs {
		a.iv = stateOf(a, a.new())
		multihash.Register(a.code, func() hash.Hash { return &chainHasher{alg: a} })
	}
}

// chainAlgOf returns the chain algorithm of digests of algorithm alg.
func chainAlgOf(alg digest.Algorithm) (*chainAlg, bool) {
	for _, a := range chainAlgs {
		if a.digest == alg {
			return a, true
		}
	}
	return nil, false
}

// chainAlgByCode returns the chain algorithm of multihash code.
func chainAlgByCode(code uint64) (*chainAlg, bool) {
	for _, a := range chainAlgs {
		if a.code == code {
			return a, true
		}
	}
	return nil, false
}

// stateOf returns the hash state of h (an alg hash that has absorbed a
// multiple of alg.block bytes).
func stateOf(a *chainAlg, h hash.Hash) []byte {
	m, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil || len(m) < len(a.magic)+a.size || string(m[:len(a.magic)]) != a.magic {
		panic(fmt.Sprintf("mesh: %s hash state cannot be exported", a.digest)) // the standard library changed
	}
	return m[len(a.magic) : len(a.magic)+a.size]
}

// resume returns an alg hash that continues from state after off bytes
// (a multiple of alg.block).
func resume(a *chainAlg, state []byte, off uint64) (hash.Hash, bool) {
	if len(state) != a.size || off%uint64(a.block) != 0 {
		return nil, false
	}
	m := make([]byte, 0, len(a.magic)+a.size+a.block+8)
	m = append(m, a.magic...)
	m = append(m, state...)
	m = append(m, make([]byte, a.block)...)
	m = binary.BigEndian.AppendUint64(m, off)
	h := a.new()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(m); err != nil {
		return nil, false
	}
	return h, true
}

// chunkHeaderLen returns the length of the header of a chunk block.
func chunkHeaderLen(a *chainAlg) int { return 1 + 8 + a.size }

// chunkHeaderMax is the longest chunk block header.
const chunkHeaderMax = 1 + 8 + sha512.Size

// chainHasher is the multihash function of chained chunks: it hashes a
// chunk block (header and chunk bytes) to the state after the chunk, or
// the digest for the last chunk. A block that is malformed (short header,
// misaligned offset, no chunk bytes, a chunk that is not the last ending
// inside a hash block) hashes to a value no well-formed chain produces
// short of a collision: the alg hash of a marker, the header and the
// length.
type chainHasher struct {
	alg *chainAlg
	hdr []byte
	h   hash.Hash // resumed once the header is complete
	n   uint64    // chunk bytes absorbed
	bad bool
}

func (c *chainHasher) Write(p []byte) (int, error) {
	n := len(p)
	if need := chunkHeaderLen(c.alg) - len(c.hdr); need > 0 {
		k := min(need, len(p))
		c.hdr = append(c.hdr, p[:k]...)
		p = p[k:]
		if len(c.hdr) == chunkHeaderLen(c.alg) {
			h, ok := resume(c.alg, c.hdr[9:], binary.BigEndian.Uint64(c.hdr[1:9]))
			c.h, c.bad = h, !ok || c.hdr[0] > 1
		}
	}
	if c.h != nil && len(p) > 0 {
		c.h.Write(p)
		c.n += uint64(len(p))
	}
	return n, nil
}

func (c *chainHasher) Sum(b []byte) []byte {
	switch {
	case c.bad || c.h == nil || c.n == 0: // no chunk is empty
		return c.malformed(b)
	case c.hdr[0] == 1:
		return c.h.Sum(b)
	case c.n%uint64(c.alg.block) != 0:
		return c.malformed(b)
	default:
		return append(b, stateOf(c.alg, c.h)...)
	}
}

// malformed returns the sum of a malformed block.
func (c *chainHasher) malformed(b []byte) []byte {
	h := c.alg.new()
	h.Write([]byte("hubmesh malformed chunk block\x00"))
	h.Write(c.hdr)
	h.Write(binary.BigEndian.AppendUint64(nil, c.n))
	return h.Sum(b)
}

func (c *chainHasher) Reset()         { *c = chainHasher{alg: c.alg} }
func (c *chainHasher) Size() int      { return c.alg.size }
func (c *chainHasher) BlockSize() int { return c.alg.block }

// chunkList is a decoded root block.
type chunkList struct {
	digest    digest.Digest
	alg       *chainAlg
	size      int64
	chunkSize int64
	// sums are the names of the chunks: the state after each chunk, and
	// the raw digest for the last one. They are strings of alg.size bytes,
	// usable as map keys.
	sums []string
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

// header returns the block header of chunk i.
func (l *chunkList) header(i int) []byte {
	return appendChunkHeader(nil, l.alg, i == len(l.sums)-1, uint64(int64(i)*l.chunkSize), l.start(i))
}

// start returns the hash state before chunk i.
func (l *chunkList) start(i int) []byte {
	if i == 0 {
		return l.alg.iv
	}
	return []byte(l.sums[i-1])
}

func appendChunkHeader(b []byte, a *chainAlg, final bool, off uint64, start []byte) []byte {
	f := byte(0)
	if final {
		f = 1
	}
	b = append(b, f)
	b = binary.BigEndian.AppendUint64(b, off)
	return append(b, start...)
}

// encode returns the root block bytes of l.
func (l *chunkList) encode() []byte {
	var b bytes.Buffer
	b.Grow(len(chunkListMagic) + 4*binary.MaxVarintLen64 + len(l.digest) + len(l.sums)*l.alg.size)
	b.WriteString(chunkListMagic)
	b.Write(binary.AppendUvarint(nil, chunkListVersion))
	b.Write(binary.AppendUvarint(nil, uint64(len(l.digest))))
	b.WriteString(string(l.digest))
	b.Write(binary.AppendUvarint(nil, uint64(l.size)))
	b.Write(binary.AppendUvarint(nil, uint64(l.chunkSize)))
	for i := 0; i+1 < len(l.sums); i++ {
		b.WriteString(l.sums[i])
	}
	return b.Bytes()
}

// digestBytes returns the raw bytes of d (which passed checkDigest).
func digestBytes(d digest.Digest) []byte {
	out, _ := hex.DecodeString(d.Encoded())
	return out
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
	alg, ok := chainAlgOf(d.Algorithm())
	if !ok {
		return nil, bad("no chunk chain for " + string(d.Algorithm()))
	}
	size, ok1 := uv()
	chunkSize, ok2 := uv()
	if !ok1 || !ok2 || size > 1<<62 || chunkSize == 0 || chunkSize > MaxChunkSize || chunkSize%chunkAlign != 0 {
		return nil, bad("bad sizes")
	}
	n := numChunks(int64(size), int64(chunkSize))
	if int64(len(rest)) != max(n-1, 0)*int64(alg.size) {
		return nil, bad(fmt.Sprintf("%d bytes of states for %d chunks", len(rest), n))
	}
	l := &chunkList{digest: d, alg: alg, size: int64(size), chunkSize: int64(chunkSize), sums: make([]string, n)}
	for i := range l.sums {
		if i == len(l.sums)-1 {
			l.sums[i] = string(digestBytes(d))
		} else {
			l.sums[i] = string(rest[i*alg.size : (i+1)*alg.size])
		}
	}
	return l, nil
}

// rawCID returns the CIDv1 (codec raw) of a block whose sha2-256 is sum:
// how chunk lists are named.
func rawCID(sum [sha256.Size]byte) cid.Cid {
	mh, _ := multihash.Encode(sum[:], multihash.SHA2_256) // cannot fail for a known code
	return cid.NewCidV1(cid.Raw, mh)
}

// blockCID returns the CIDv1 raw sha2-256 of data.
func blockCID(data []byte) cid.Cid { return rawCID(sha256.Sum256(data)) }

// chunkCID returns the CID of chunk i.
func (l *chunkList) chunkCID(i int) cid.Cid {
	mh, _ := multihash.Encode([]byte(l.sums[i]), l.alg.code) // cannot fail
	return cid.NewCidV1(cid.Raw, mh)
}

// sha256Of returns the sha2-256 digest inside c, and false when c is not a
// CIDv1 raw sha2-256 (the CID of a chunk list).
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

// chunkSumOf returns the chain algorithm and the name of the chunk c, and
// false when c is not the CID of a chained chunk.
func chunkSumOf(c cid.Cid) (*chainAlg, string, bool) {
	if !c.Defined() || c.Version() != 1 || c.Type() != cid.Raw {
		return nil, "", false
	}
	dec, err := multihash.Decode(c.Hash())
	if err != nil {
		return nil, "", false
	}
	a, ok := chainAlgByCode(dec.Code)
	if !ok || len(dec.Digest) != a.size {
		return nil, "", false
	}
	return a, string(dec.Digest), true
}

// maxChunks returns the most chunks one root block can list without
// exceeding MaxChunkSize.
func maxChunks(a *chainAlg) int64 { return int64((MaxChunkSize-512)/a.size) + 1 }

// chunkBlob reads size bytes of blob d from r and returns its chunk list.
// The chunk size is chunkSize (a multiple of chunkAlign), doubled as often
// as needed (up to MaxChunkSize) for the list to fit in one block; a blob
// too large even then fails with an error wrapping hubmesh.ErrSizeInvalid.
// The blob is hashed once, in order (the chain cannot be split), while
// the next chunk is read; bytes that do not hash to d fail with an error
// wrapping hubmesh.ErrDigestMismatch.
func chunkBlob(ctx context.Context, d digest.Digest, size int64, chunkSize int64, r io.Reader) (*chunkList, error) {
	alg, ok := chainAlgOf(d.Algorithm())
	if !ok {
		return nil, fmt.Errorf("blob %s: no chunk chain for its algorithm: %w", d, hubmesh.ErrInvalid)
	}
	if chunkSize <= 0 || chunkSize%chunkAlign != 0 {
		return nil, fmt.Errorf("blob %s: chunk size %d is not a multiple of %d: %w", d, chunkSize, chunkAlign, hubmesh.ErrInvalid)
	}
	for numChunks(size, chunkSize) > maxChunks(alg) && chunkSize*2 <= MaxChunkSize {
		chunkSize *= 2
	}
	n := numChunks(size, chunkSize)
	if n > maxChunks(alg) {
		return nil, fmt.Errorf("blob %s: %d bytes is too large to exchange: %w", d, size, hubmesh.ErrSizeInvalid)
	}
	l := &chunkList{digest: d, alg: alg, size: size, chunkSize: chunkSize, sums: make([]string, n)}
	h := alg.new()
	if n > 0 {
		// One goroutine reads the next chunk while this one hashes.
		type filled struct {
			buf []byte
			err error
		}
		free := make(chan []byte, 2)
		free <- make([]byte, chunkSize)
		free <- make([]byte, chunkSize)
		full := make(chan filled, 2)
		rctx, cancel := context.WithCancel(ctx)
		defer func() {
			cancel()
			for range full { // the reader is done with r when it closes full
			}
		}()
		go func() {
			defer close(full)
			for i := range l.sums {
				var buf []byte
				select {
				case buf = <-free:
				case <-rctx.Done():
					return
				}
				_, m := l.chunkRange(i)
				if _, err := io.ReadFull(r, buf[:m]); err != nil {
					full <- filled{err: fmt.Errorf("blob %s: read chunk %d: %w", d, i, err)}
					return
				}
				full <- filled{buf: buf[:m]}
			}
		}()
		for i := range l.sums {
			var (
				f  filled
				ok bool
			)
			select {
			case f, ok = <-full:
			case <-ctx.Done():
				return nil, fmt.Errorf("blob %s: %w", d, ctx.Err())
			}
			if !ok {
				// The reader stopped early: only when ctx ended (it never
				// stops otherwise before the last chunk or an error).
				return nil, fmt.Errorf("blob %s: %w", d, ctx.Err())
			}
			if f.err != nil {
				return nil, f.err
			}
			h.Write(f.buf)
			if i < len(l.sums)-1 {
				l.sums[i] = string(stateOf(alg, h))
			}
			free <- f.buf[:cap(f.buf)]
		}
	}
	got := h.Sum(nil)
	want := digestBytes(d)
	if !bytes.Equal(got, want) {
		return nil, fmt.Errorf("blob %s: content has digest %s:%x: %w", d, d.Algorithm(), got, hubmesh.ErrDigestMismatch)
	}
	if n > 0 {
		l.sums[n-1] = string(want)
	}
	return l, nil
}

// chunkRecorder feeds a hash of a chain algorithm and records its state at
// every multiple of unit bytes (a multiple of the hash block size): the
// names of the chunks of the bytes it saw, for any chunk size that is
// unit doubled k times.
type chunkRecorder struct {
	h      hash.Hash
	alg    *chainAlg
	unit   int64
	n      int64    // bytes written
	states [][]byte // state after (i+1)*unit bytes
}

// Write implements io.Writer: it writes p to the hash, stopping at each
// unit boundary to record the state there.
func (c *chunkRecorder) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		k := min(int64(len(p)), c.unit-c.n%c.unit)
		c.h.Write(p[:k])
		c.n += k
		p = p[k:]
		if c.n%c.unit == 0 {
			c.states = append(c.states, stateOf(c.alg, c.h))
		}
	}
	return total, nil
}

// truncate forgets the bytes past n, after the hash was rolled back to
// its state at n.
func (c *chunkRecorder) truncate(n int64) {
	c.n = n
	c.states = c.states[:n/c.unit]
}

// list returns the chunk list of blob d (size bytes, the bytes the
// recorder saw) for chunk size unit, doubled as chunkBlob does.
func (c *chunkRecorder) list(d digest.Digest, size int64) (*chunkList, error) {
	if size != c.n {
		return nil, fmt.Errorf("blob %s: %d bytes recorded, not %d: %w", d, c.n, size, hubmesh.ErrInvalid)
	}
	chunkSize := c.unit
	for numChunks(size, chunkSize) > maxChunks(c.alg) && chunkSize*2 <= MaxChunkSize {
		chunkSize *= 2
	}
	n := numChunks(size, chunkSize)
	if n > maxChunks(c.alg) {
		return nil, fmt.Errorf("blob %s: %d bytes is too large to exchange: %w", d, size, hubmesh.ErrSizeInvalid)
	}
	step := chunkSize / c.unit
	l := &chunkList{digest: d, alg: c.alg, size: size, chunkSize: chunkSize, sums: make([]string, n)}
	for i := range n - 1 {
		l.sums[i] = string(c.states[(i+1)*step-1])
	}
	if n > 0 {
		l.sums[n-1] = string(digestBytes(d))
	}
	return l, nil
}
