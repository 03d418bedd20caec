package regclient

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"

	"github.com/opencontainers/go-digest"
)

// SaltLen is the number of leading bytes of a layer file that a round
// rewrites (see RewriteHead), so that every round pushes blobs no registry
// has seen while the rest of the file stays as generated.
const SaltLen = 16

// SeedBytes is a ChaCha8 seed made of a and b.
func SeedBytes(a, b uint64) (s [32]byte) {
	binary.LittleEndian.PutUint64(s[0:], a)
	binary.LittleEndian.PutUint64(s[8:], b)
	return s
}

// WriteRandom writes size random (incompressible) bytes from a ChaCha8
// stream with seed to a new file at path.
func WriteRandom(path string, size int64, seed [32]byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.CopyN(w, rand.NewChaCha8(seed), size); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// RewriteHead overwrites the start of the file at path with head and
// returns the SHA-256 digest of the whole file.
func RewriteHead(path string, head []byte) (digest.Digest, error) {
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
