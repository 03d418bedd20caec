package mesh

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestFetchDirectWrites: a fetch writes its chunks with O_DIRECT where the
// filesystem allows it (else through the page cache, as with
// bufferedWrites): a reader that fell behind the chunks kept in memory
// reads the rest back from the file, also after the blob was installed and
// the last chunk's padding cut off, and gets the blob's bytes; the stored
// blob has its exact size and content.
func TestFetchDirectWrites(t *testing.T) {
	t.Parallel()
	for _, buffered := range []bool{false, true} {
		name := map[bool]string{false: "direct", true: "buffered"}[buffered]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := ExchangeConfig{Logger: testLogger(t), ChunkSize: 64 << 10}
			a := newExNode(t, cfg)
			cfg.bufferedWrites = buffered
			b := newExNode(t, cfg)
			// More chunks than a transfer keeps in memory; the last one
			// short and not a whole page.
			data := randomBytes(t, (3*memChunks)*(64<<10)+5)
			d, root := a.putBlob(t, data)
			providers := b.knows(t, a)
			size := int64(len(data))

			rc, err := b.ex.Fetch(t.Context(), d, size, root, providers)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			defer rc.Close()
			fr := rc.(*fetchReader)
			first := make([]byte, 1)
			if _, err := io.ReadFull(rc, first); err != nil {
				t.Fatalf("first byte: %v", err)
			}
			// Let the transfer finish before reading on.
			if err := b.ex.Replicate(t.Context(), d, size, root, providers); err != nil {
				t.Fatalf("Replicate: %v", err)
			}
			direct := fr.t.bufs != nil
			if !buffered && !direct && directWorks(t, b.store.tmp) {
				t.Fatal("the filesystem takes O_DIRECT but the fetch wrote through the page cache")
			}
			if buffered && direct {
				t.Fatal("bufferedWrites set, but the fetch wrote directly")
			}
			t.Logf("direct writes: %v", direct)
			rest, err := io.ReadAll(rc)
			if err != nil {
				t.Fatalf("read the rest: %v", err)
			}
			if got := append(first, rest...); !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes, not the blob's %d", len(got), len(data))
			}
			checkStored(t, b, d, data)
		})
	}
}

// directWorks reports whether files in dir can be opened with O_DIRECT.
func directWorks(t *testing.T, dir string) bool {
	t.Helper()
	p := filepath.Join(dir, "direct-probe")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	f := openDirect(p)
	if f == nil {
		return false
	}
	f.Close()
	return true
}
