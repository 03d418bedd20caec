package mesh

import (
	"bytes"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/opencontainers/go-digest"
)

// statBlob returns what n's blob file of d is now.
func statBlob(t *testing.T, n *exNode, d digest.Digest) os.FileInfo {
	t.Helper()
	info, err := os.Stat(n.store.path(d))
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// TestExchangeServingChecks shows when a node hashes the chunks it serves:
// not again after it hashed them itself (computing the chunk list,
// serving them once, fetching the blob), but again once the blob file
// changed, and a chunk that no longer matches is then not served.
func TestExchangeServingChecks(t *testing.T) {
	t.Parallel()
	const chunk = 64 << 10
	cfg := ExchangeConfig{Logger: testLogger(t), ChunkSize: chunk}
	a, b := newExNode(t, cfg), newExNode(t, cfg)
	data := randomBytes(t, 4*chunk+10)
	d, root := a.putBlob(t, data)
	l := a.rootList(t, root)
	checks := &a.ex.bstore.checks

	info := statBlob(t, a, d)
	for i := range l.sums {
		off, _ := l.chunkRange(i)
		if !checks.checked(d, info, off) {
			t.Fatalf("chunk %d not counted as checked after ChunkRoot hashed it", i)
		}
	}

	// The blob file is written to (a rotten disk block would not change
	// the modification time; a write does, which Chtimes makes certain on
	// filesystems with coarse timestamps).
	f, err := os.OpenFile(a.store.path(d), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{data[chunk+5] ^ 0xff}, chunk+5); err != nil {
		t.Fatal(err)
	}
	f.Close()
	later := info.ModTime().Add(time.Second)
	if err := os.Chtimes(a.store.path(d), later, later); err != nil {
		t.Fatal(err)
	}
	changed := statBlob(t, a, d)
	if checks.checked(d, changed, 0) {
		t.Fatal("chunk 0 still counted as checked after its file changed")
	}
	if _, err := a.ex.bstore.Get(t.Context(), l.chunkCID(1)); !ipld.IsNotFound(err) {
		t.Fatalf("Get(rotten chunk 1) = %v, want not found", err)
	}
	if checks.checked(d, changed, chunk) {
		t.Error("rotten chunk 1 counted as checked")
	}
	blk, err := a.ex.bstore.Get(t.Context(), l.chunkCID(0))
	if err != nil {
		t.Fatalf("Get(intact chunk 0) = %v", err)
	}
	if !bytes.Equal(blk.RawData(), append(l.header(0), data[:chunk]...)) {
		t.Fatal("chunk 0 differs")
	}
	if !checks.checked(d, changed, 0) {
		t.Error("chunk 0 not counted as checked after it was hashed and served")
	}

	// A fetched blob was checked whole: its chunks are served unhashed.
	c := newExNode(t, cfg)
	other := randomBytes(t, 3*chunk)
	d2, root2 := c.putBlob(t, other)
	if got := fetchAll(t, b, d2, int64(len(other)), root2, b.knows(t, c)); !bytes.Equal(got, other) {
		t.Fatal("fetched bytes differ")
	}
	if !b.ex.bstore.checks.checked(d2, statBlob(t, b, d2), 2*chunk) {
		t.Error("chunk of a fetched blob not counted as checked")
	}

	if err := a.ex.Forget(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	if checks.checked(d, changed, 0) {
		t.Error("chunk counted as checked after Forget")
	}
}

// TestFileChecksBounded checks that the serving checks remember a bounded
// number of blob files.
func TestFileChecksBounded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := dir + "/f"
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	c := fileChecks{blobs: make(map[digest.Digest]*fileCheck)}
	for i := range maxFileChecks + 10 {
		c.mark(digest.FromString(strconv.Itoa(i)), info, int64(i))
	}
	if n := len(c.blobs); n != maxFileChecks {
		t.Errorf("%d blob files remembered, want %d", n, maxFileChecks)
	}
}

// TestChunkIndexVersion checks that an index of another version (or of
// none: version 1 had no version key) is emptied when opened, so that
// chunks named the old way are never mixed with chained ones, and that an
// index of this version is kept.
func TestChunkIndexVersion(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	logger := testLogger(t)
	old := []byte("c" + string(make([]byte, 32)) + "sha256:old")
	for _, tc := range []struct {
		name    string
		version []byte // nil: no version key
		kept    bool
	}{
		{"version 1", nil, false},
		{"unknown version", []byte("9"), false},
		{"this version", []byte(indexVersion), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := dir + "/" + tc.name
			db, err := pebble.Open(path, &pebble.Options{Logger: pebbleLogger{logger}})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Set(old, []byte{0, 1}, pebble.Sync); err != nil {
				t.Fatal(err)
			}
			if tc.version != nil {
				if err := db.Set(versionKey, tc.version, pebble.Sync); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			x, err := openChunkIndex(path, logger)
			if err != nil {
				t.Fatal(err)
			}
			defer x.close()
			if _, ok, err := x.get(old); err != nil || ok != tc.kept {
				t.Errorf("old entry present = %v, %v; want %v", ok, err, tc.kept)
			}
			if v, ok, err := x.get(versionKey); err != nil || !ok || string(v) != indexVersion {
				t.Errorf("version = %q, %v, %v; want %q", v, ok, err, indexVersion)
			}
		})
	}
}
