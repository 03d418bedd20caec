package mesh

import (
	"os"
	"unsafe"
)

// Direct writes of fetched chunks.
//
// A node that fetches a blob keeps it, and it usually also streams it to
// a client at once. Written through the page cache, every byte of a new
// blob needs a page the kernel has not used recently; on the VMs this
// project is measured on, whose host backs guest memory lazily and takes
// freed pages back after about two seconds, that cost 1-3.5 CPU-seconds
// per GiB (against 0.2 for a page just freed), more than hashing, TLS and
// the HTTP response together. So a fetch writes its chunks with O_DIRECT
// where the filesystem allows it (0.16 CPU-seconds per GiB here), and
// keeps the last chunks it wrote in memory for the readers that follow
// it: the client's stream and fellow fetchers read them from there, and
// only a reader that falls further behind reads the temp file.

// directAlign is the alignment O_DIRECT needs of file offsets, lengths
// and buffers: a page, which covers 512-byte and 4 KiB sectors.
const directAlign = 4096

// memChunks bounds how many written chunks a transfer keeps in memory
// for its readers (16 MiB at the default chunk size).
const memChunks = 16

// spareBufs bounds the aligned chunk buffers a transfer keeps for reuse
// besides those in memory.
const spareBufs = 4

// alignUp rounds n up to a multiple of directAlign.
func alignUp(n int64) int64 { return (n + directAlign - 1) &^ (directAlign - 1) }

// alignedBuf returns a buffer of n bytes whose first byte is aligned to
// directAlign.
func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	off := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) & (directAlign - 1)); r != 0 {
		off = directAlign - r
	}
	return b[off : off+n : off+n]
}

// chunkBufs is a small pool of aligned buffers of one size.
type chunkBufs struct {
	size  int
	spare chan []byte
}

// newChunkBufs returns a pool of buffers of size bytes (rounded up to
// directAlign, so that a padded chunk fits).
func newChunkBufs(size int) *chunkBufs {
	return &chunkBufs{size: int(alignUp(int64(size))), spare: make(chan []byte, spareBufs)}
}

// get returns an aligned buffer of length n (at most the pool's size)
// and capacity the pool's size.
func (p *chunkBufs) get(n int) []byte {
	select {
	case b := <-p.spare:
		return b[:n]
	default:
		return alignedBuf(p.size)[:n]
	}
}

// put gives a buffer from get back for reuse.
func (p *chunkBufs) put(b []byte) {
	if cap(b) != p.size {
		return
	}
	select {
	case p.spare <- b[:cap(b)]:
	default:
	}
}

// directWriter writes chunks of a temp file with O_DIRECT.
type directWriter struct {
	f *os.File
}

// openDirectWriter opens path for writing with O_DIRECT, or returns nil
// when the platform or the filesystem does not support it (the caller
// then writes through the page cache).
func openDirectWriter(path string) *directWriter {
	f := openDirect(path)
	if f == nil {
		return nil
	}
	return &directWriter{f: f}
}

// writeChunk writes buf (aligned, from chunkBufs) at off, padding it with
// zeros to a multiple of directAlign; the padding past the end of the
// blob is cut off by the truncate before install.
func (w *directWriter) writeChunk(buf []byte, off int64) error {
	n := len(buf)
	padded := buf[:alignUp(int64(n))]
	clear(padded[n:])
	_, err := w.f.WriteAt(padded, off)
	return err
}

func (w *directWriter) close() error { return w.f.Close() }
