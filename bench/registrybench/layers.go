package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// saltLen is the number of leading bytes of each layer file that salt
// rewrites, so that every round pushes blobs no registry has seen.
const saltLen = 16

// layerSet is a set of random layer files on disk, generated once per run.
type layerSet struct {
	paths []string
	size  int64
}

// generateLayers writes n files of size random bytes into dir.
func generateLayers(dir string, n int, size int64, seed uint64) (*layerSet, error) {
	if size < saltLen {
		return nil, fmt.Errorf("layer size %d: want at least %d bytes", size, saltLen)
	}
	ls := &layerSet{size: size}
	g := new(errgroup.Group)
	g.SetLimit(runtime.NumCPU())
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("layer-%d", i))
		ls.paths = append(ls.paths, p)
		g.Go(func() error {
			return writeRandom(p, size, rand.NewChaCha8(seedBytes(seed, uint64(i))))
		})
	}
	return ls, g.Wait()
}

func seedBytes(a, b uint64) (s [32]byte) {
	binary.LittleEndian.PutUint64(s[0:], a)
	binary.LittleEndian.PutUint64(s[8:], b)
	return s
}

func writeRandom(path string, size int64, r io.Reader) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.CopyN(w, r, size); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// salt rewrites the first saltLen bytes of every layer with (nonce, round,
// layer index) and returns the layers as blobs with their new digests. The
// rest of each file stays as generated, so a round costs one read of the
// files instead of new random data.
func (ls *layerSet) salt(nonce, round uint64) ([]blob, error) {
	blobs := make([]blob, len(ls.paths))
	g := new(errgroup.Group)
	g.SetLimit(runtime.NumCPU())
	for i, p := range ls.paths {
		g.Go(func() error {
			var s [saltLen]byte
			binary.LittleEndian.PutUint64(s[0:], nonce)
			binary.LittleEndian.PutUint64(s[8:], round<<16|uint64(i))
			d, err := rewriteHead(p, s[:])
			if err != nil {
				return err
			}
			blobs[i] = blob{path: p, desc: v1.Descriptor{
				MediaType: v1.MediaTypeImageLayer, Digest: d, Size: ls.size,
			}}
			return nil
		})
	}
	return blobs, g.Wait()
}

// rewriteHead overwrites the start of the file at path with head and
// returns the SHA-256 digest of the whole file.
func rewriteHead(path string, head []byte) (digest.Digest, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.WriteAt(head, 0); err != nil {
		return "", fmt.Errorf("salt %s: %w", path, err)
	}
	dg := digest.SHA256.Digester()
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	if _, err := io.CopyBuffer(dg.Hash(), io.NewSectionReader(f, 0, 1<<62), *buf); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return dg.Digest(), nil
}
