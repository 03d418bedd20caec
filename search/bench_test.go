package search

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// benchIndex is 100,000 repositories whose descriptions share a few very
// common words (as "docker", "image" are on a real hub).
func benchIndex(b *testing.B) *Index {
	rng := rand.New(rand.NewPCG(1, 2))
	vocab := make([]string, 20000)
	for i := range vocab {
		vocab[i] = fmt.Sprintf("w%dx", i)
	}
	vocab[0] = "postgres"
	z := rand.NewZipf(rng, 1.1, 2, uint64(len(vocab)-1))
	docs := make([]Doc, 0, 100000)
	for i := range 100000 {
		words := make([]string, 6+rng.IntN(15))
		for j := range words {
			words[j] = vocab[z.Uint64()]
		}
		docs = append(docs, Doc{Name: fmt.Sprintf("ns%d/%s-%d", i%5000, vocab[z.Uint64()], i), Description: strings.Join(words, " "),
			Stars: int64(rng.IntN(100)), Pulls: int64(rng.IntN(10000)), Private: i%20 == 0})
	}
	ix := New()
	ix.Replace(docs)
	return ix
}

func BenchmarkSearch(b *testing.B) {
	ix := benchIndex(b)
	for _, q := range []string{"postgres", "w1", "w19999x", "ns1", ""} {
		b.Run(q, func(b *testing.B) {
			for b.Loop() {
				ix.Search(Query{Text: q, CanSee: func(string) bool { return false }})
			}
		})
	}
}
