package main

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"runtime"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/hubmesh/hubmesh/bench/internal/regclient"
)

// layerSet is a set of random layer files on disk, generated once per run.
type layerSet struct {
	paths []string
	size  int64
}

// generateLayers writes n files of size random bytes into dir.
func generateLayers(dir string, n int, size int64, seed uint64) (*layerSet, error) {
	if size < regclient.SaltLen {
		return nil, fmt.Errorf("layer size %d: want at least %d bytes", size, regclient.SaltLen)
	}
	ls := &layerSet{size: size}
	g := new(errgroup.Group)
	g.SetLimit(runtime.NumCPU())
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("layer-%d", i))
		ls.paths = append(ls.paths, p)
		g.Go(func() error { return regclient.WriteRandom(p, size, regclient.SeedBytes(seed, uint64(i))) })
	}
	return ls, g.Wait()
}

// salt rewrites the first regclient.SaltLen bytes of every layer with
// (nonce, round, layer index) and returns the layers as blobs with their
// new digests. The rest of each file stays as generated, so a round costs
// one read of the files instead of new random data.
func (ls *layerSet) salt(nonce, round uint64) ([]regclient.Blob, error) {
	blobs := make([]regclient.Blob, len(ls.paths))
	g := new(errgroup.Group)
	g.SetLimit(runtime.NumCPU())
	for i, p := range ls.paths {
		g.Go(func() error {
			var s [regclient.SaltLen]byte
			binary.LittleEndian.PutUint64(s[0:], nonce)
			binary.LittleEndian.PutUint64(s[8:], round<<16|uint64(i))
			d, err := regclient.RewriteHead(p, s[:])
			if err != nil {
				return err
			}
			blobs[i] = regclient.Blob{Path: p, Desc: v1.Descriptor{
				MediaType: v1.MediaTypeImageLayer, Digest: d, Size: ls.size,
			}}
			return nil
		})
	}
	return blobs, g.Wait()
}
