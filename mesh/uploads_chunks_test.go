package mesh

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestUploadIndexesChunks: with Uploads.IndexChunks, a committed upload's
// chunk list is in the exchange's index the moment Commit returns (no
// hashing pass when a peer first asks), equal to the list ChunkRoot
// computes from the blob file, also after an append that failed part
// way and was retried, and when the chunk size must double for the list
// to fit in one block; a peer fetches the blob by that root.
func TestUploadIndexesChunks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		alg   digest.Algorithm
		chunk int
		size  int
	}{
		{"sha256", digest.SHA256, 64 << 10, 5<<20 + 77},
		{"sha256 whole chunks", digest.SHA256, 64 << 10, 2 << 20},
		{"sha256 one short chunk", digest.SHA256, 64 << 10, 1000},
		{"sha512", digest.SHA512, 64 << 10, 3<<20 + 5},
		// 9 MiB in 128-byte chunks is more than one root block lists:
		// the chunk size doubles to 256 bytes.
		{"sha256 doubled chunk size", digest.SHA256, 128, 9 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := ExchangeConfig{Logger: testLogger(t), ChunkSize: tc.chunk}
			a, b := newExNode(t, cfg), newExNode(t, cfg)
			u, err := NewUploads(filepath.Join(a.dir, "uploads"), a.store, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			u.IndexChunks(a.ex)
			data := randomBytes(t, tc.size)
			d := tc.alg.FromBytes(data)

			up := mustCreate(t, u, "r", tc.alg)
			// Pieces that do not end on chunk boundaries, and one append
			// that fails after part of it reached the file and the hash.
			cut := min(len(data), 100_003)
			mustAppend(t, up, 0, data[:cut])
			if _, err := up.Append(t.Context(), int64(cut), &failingReader{r: bytes.NewReader(randomBytes(t, 3<<19)), err: io.ErrUnexpectedEOF}); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("failing append: %v", err)
			}
			mustAppend(t, up, int64(cut), data[cut:])
			if _, err := up.Commit(t.Context(), d); err != nil {
				t.Fatalf("Commit: %v", err)
			}
			got, ok, err := a.ex.index.rootOf(d)
			if err != nil || !ok {
				t.Fatalf("chunk root indexed at commit: %v, %v", ok, err)
			}
			l, err := chunkBlob(t.Context(), d, int64(len(data)), int64(tc.chunk), bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if want := blockCID(l.encode()); got != want {
				t.Fatalf("root indexed at commit %s, computed from the blob %s", got, want)
			}
			if fetched := fetchAll(t, b, d, int64(len(data)), got.String(), b.knows(t, a)); !bytes.Equal(fetched, data) {
				t.Fatal("blob fetched by the indexed root differs")
			}
		})
	}
}
