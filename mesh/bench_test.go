package mesh

import (
	"bytes"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
)

// BenchmarkUploadAppendCommit measures the push path of one 64 MiB layer:
// one Append of the whole body (hashing while writing) and a Commit
// (fsync, rename, dir fsync). The blob is deleted between rounds, outside
// the timer, so each round commits a new file.
func BenchmarkUploadAppendCommit(b *testing.B) {
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		b.Run(string(alg), func(b *testing.B) {
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			root := b.TempDir()
			store, err := OpenStore(filepath.Join(root, "blobs"), logger)
			if err != nil {
				b.Fatal(err)
			}
			uploads, err := NewUploads(filepath.Join(root, "uploads"), store, logger)
			if err != nil {
				b.Fatal(err)
			}
			data := randomBytes(b, 64<<20)
			d := alg.FromBytes(data)
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			for range b.N {
				up, err := uploads.Create(b.Context(), "bench/app", alg)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := up.Append(b.Context(), 0, bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
				if _, err := up.Commit(b.Context(), d); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := store.Delete(b.Context(), d); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkStorePut measures Put of a 64 MiB blob (peer fetch path).
func BenchmarkStorePut(b *testing.B) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := OpenStore(filepath.Join(b.TempDir(), "blobs"), logger)
	if err != nil {
		b.Fatal(err)
	}
	data := randomBytes(b, 64<<20)
	d := digest.SHA256.FromBytes(data)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		if _, err := store.Put(b.Context(), d, bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := store.Delete(b.Context(), d); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
