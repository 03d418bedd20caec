// Command searchbench measures the repository search index (package
// search) at the scale of issue 5: 100,000 repositories with
// descriptions, queried concurrently. It reports the index build time,
// the heap it holds, and the latency of queries (p50, p99, max) with
// several workers at once, and writes a Markdown report.
//
//	go run ./bench/searchbench -out docs/benchmarks-search.md
//	go run ./bench/searchbench -repos 20000 -queries 20000 -workers 8
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hubmesh/hubmesh/search"
)

func main() {
	repos := flag.Int("repos", 100000, "repositories in the index")
	queries := flag.Int("queries", 50000, "queries in the timed run")
	workers := flag.Int("workers", runtime.GOMAXPROCS(0), "concurrent query workers (default GOMAXPROCS: more only adds scheduler queueing to each latency)")
	updates := flag.Bool("updates", true, "apply pull-count updates (a flush every 100 ms) while querying")
	out := flag.String("out", "", "write the Markdown report here (default: stdout)")
	seed := flag.Uint64("seed", 1, "corpus seed")
	flag.Parse()

	rep, err := run(*repos, *queries, *workers, *updates, *seed)
	if err != nil {
		fmt.Fprintln(os.Stderr, "searchbench:", err)
		os.Exit(1)
	}
	md := rep.markdown()
	if *out == "" {
		fmt.Print(md)
		return
	}
	if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "searchbench:", err)
		os.Exit(1)
	}
	fmt.Print(md)
}

// corpus builds n repositories: namespaces and names made of words from a
// vocabulary with a skewed (Zipf) frequency, descriptions of 6 to 20
// words, stars and pulls with a long tail, 5% private, 1% official.
type corpus struct {
	vocab []string
	docs  []search.Doc
	rng   *rand.Rand
	zipf  *rand.Zipf
}

func newCorpus(n int, seed uint64) *corpus {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	c := &corpus{rng: rng}
	syll := []string{"ka", "lo", "mi", "ne", "po", "ra", "si", "tu", "ve", "xo", "za", "be", "da", "fe", "gi", "hu"}
	seen := map[string]bool{}
	for len(c.vocab) < 20000 {
		var b strings.Builder
		for range 2 + rng.IntN(3) {
			b.WriteString(syll[rng.IntN(len(syll))])
		}
		if w := b.String(); !seen[w] {
			seen[w] = true
			c.vocab = append(c.vocab, w)
		}
	}
	// well-known words, so that queries hit real-looking names too
	c.vocab = append([]string{"postgres", "redis", "nginx", "node", "python", "alpine", "golang", "mysql", "api", "web", "server", "db"}, c.vocab...)
	c.zipf = rand.NewZipf(rng, 1.1, 2, uint64(len(c.vocab)-1))
	namespaces := make([]string, n/20+1)
	for i := range namespaces {
		namespaces[i] = c.word() + fmt.Sprint(i%10)
	}
	names := map[string]bool{}
	for len(c.docs) < n {
		ns := namespaces[c.rng.IntN(len(namespaces))]
		name := ns + "/" + c.word()
		if c.rng.IntN(2) == 0 {
			name += "-" + c.word()
		}
		if names[name] {
			continue
		}
		names[name] = true
		words := make([]string, 6+c.rng.IntN(15))
		for i := range words {
			words[i] = c.word()
		}
		c.docs = append(c.docs, search.Doc{
			Name: name, Description: strings.Join(words, " "),
			Private: c.rng.IntN(20) == 0, Official: c.rng.IntN(100) == 0,
			Stars: int64(c.rng.ExpFloat64() * 20), Pulls: int64(c.rng.ExpFloat64() * 5000),
		})
	}
	return c
}

func (c *corpus) word() string { return c.vocab[c.zipf.Uint64()] }

// query draws a query: a frequent word, a rare word, two words, a prefix
// of two or three letters, or an exact name.
func (c *corpus) query(rng *rand.Rand) search.Query {
	var text string
	switch rng.IntN(6) {
	case 0:
		text = c.vocab[rng.IntN(12)]
	case 1:
		text = c.vocab[rng.IntN(len(c.vocab))]
	case 2:
		text = c.vocab[rng.IntN(200)] + " " + c.vocab[rng.IntN(2000)]
	case 3:
		w := c.vocab[rng.IntN(len(c.vocab))]
		text = w[:min(len(w), 2+rng.IntN(2))]
	case 4:
		text = c.docs[rng.IntN(len(c.docs))].Name
	default:
		text = c.vocab[rng.IntN(100)]
	}
	q := search.Query{Text: text, PageSize: 25}
	if rng.IntN(5) == 0 {
		q.MinStars = 3
	}
	if rng.IntN(3) == 0 {
		q.CanSee = func(name string) bool { return len(name)%2 == 0 }
	}
	return q
}

type report struct {
	repos, queries, workers int
	updates                 bool
	build                   time.Duration
	heap                    uint64
	p50, p90, p99, max      time.Duration
	qps                     float64
	meanHits                float64
	byKind                  map[string][2]time.Duration
	flushes                 int64
}

func heapInUse() uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func run(nRepos, nQueries, workers int, updates bool, seed uint64) (*report, error) {
	if nRepos < 1 || nQueries < 1 || workers < 1 {
		return nil, fmt.Errorf("-repos, -queries and -workers must be positive")
	}
	c := newCorpus(nRepos, seed)
	base := heapInUse()
	ix := search.New()
	start := time.Now()
	ix.Replace(c.docs)
	rep := &report{repos: nRepos, queries: nQueries, workers: workers, updates: updates, build: time.Since(start)}
	rep.heap = heapInUse() - base
	runtime.KeepAlive(ix)

	// warm-up
	wrng := rand.New(rand.NewPCG(seed, 99))
	for range 500 {
		ix.Search(c.query(wrng))
	}

	stop := make(chan struct{})
	var flushes atomic.Int64
	var upd sync.WaitGroup
	if updates {
		upd.Go(func() {
			rng := rand.New(rand.NewPCG(seed, 7))
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				batch := make([]search.Doc, 500)
				for i := range batch {
					d := c.docs[rng.IntN(len(c.docs))]
					d.Pulls += int64(rng.IntN(100))
					batch[i] = d
				}
				ix.Update(batch, nil)
				flushes.Add(1)
			}
		})
	}

	lat := make([]time.Duration, nQueries)
	var hits atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)+1000))
			for {
				i := next.Add(1) - 1
				if i >= int64(nQueries) {
					return
				}
				q := c.query(rng)
				s := time.Now()
				r := ix.Search(q)
				lat[i] = time.Since(s)
				hits.Add(int64(len(r.Hits)))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	close(stop)
	upd.Wait()
	rep.flushes = flushes.Load()

	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	rep.p50, rep.p90, rep.p99, rep.max = pct(0.50), pct(0.90), pct(0.99), lat[len(lat)-1]
	rep.qps = float64(nQueries) / elapsed.Seconds()
	rep.meanHits = float64(hits.Load()) / float64(nQueries)

	// per kind of query, sequentially (no contention): the worst shapes
	rep.byKind = map[string][2]time.Duration{}
	for _, k := range []struct{ name, text string }{
		{"frequent word", c.vocab[0]},
		{"two-letter prefix", "ka"},
		{"rare word", c.vocab[len(c.vocab)-1]},
		{"exact name", c.docs[0].Name},
		{"empty text, min stars 50", ""},
	} {
		var ds []time.Duration
		for range 200 {
			q := search.Query{Text: k.text}
			if k.text == "" {
				q.MinStars = 50
			}
			s := time.Now()
			ix.Search(q)
			ds = append(ds, time.Since(s))
		}
		slices.Sort(ds)
		rep.byKind[k.name] = [2]time.Duration{ds[len(ds)/2], ds[len(ds)*99/100]}
	}
	return rep, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Search benchmark\n\n")
	fmt.Fprintf(&b, "The repository search index (package `search`) that answers `docker search` and\n")
	fmt.Fprintf(&b, "`/api/v1/search` on every node, measured in process (no HTTP) by `bench/searchbench`.\n")
	fmt.Fprintf(&b, "Goal of issue 5: p99 under 10 ms with 100,000 repositories under concurrent queries.\n\n")
	fmt.Fprintf(&b, "```\ngo run ./bench/searchbench -out docs/benchmarks-search.md\n```\n\n")
	fmt.Fprintf(&b, "## Method\n\n")
	fmt.Fprintf(&b, "- %d synthetic repositories: namespace/name built from a 20,000-word vocabulary drawn with a\n", r.repos)
	fmt.Fprintf(&b, "  Zipf distribution (s=1.1, so a few words are in many names), descriptions of 6-20 words,\n")
	fmt.Fprintf(&b, "  stars and pulls with a long tail, 5%% private, 1%% official.\n")
	fmt.Fprintf(&b, "- %d queries from %d concurrent workers (GOMAXPROCS=%d), mixed: a frequent word, a rare word,\n", r.queries, r.workers, runtime.GOMAXPROCS(0))
	fmt.Fprintf(&b, "  two words, a 2-3 letter prefix, an exact name; a fifth filter on stars, a third bring a\n")
	fmt.Fprintf(&b, "  visibility predicate for private candidates; 25 results a page.\n")
	if r.updates {
		fmt.Fprintf(&b, "- Meanwhile a writer applies a pull-count flush of 500 repositories every 100 ms (%d flushes).\n", r.flushes)
	}
	fmt.Fprintf(&b, "- Heap: live heap after a GC with the index built, minus before.\n\n")
	fmt.Fprintf(&b, "## Results (%s, %s/%s, %d CPUs)\n\n", time.Now().UTC().Format("2006-01-02"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	fmt.Fprintf(&b, "| measure | value |\n| --- | --- |\n")
	fmt.Fprintf(&b, "| index build (%d repositories) | %s |\n", r.repos, ms(r.build))
	fmt.Fprintf(&b, "| heap held by the index | %.1f MiB |\n", float64(r.heap)/(1<<20))
	fmt.Fprintf(&b, "| query latency p50 | %s |\n", ms(r.p50))
	fmt.Fprintf(&b, "| query latency p90 | %s |\n", ms(r.p90))
	fmt.Fprintf(&b, "| query latency p99 | **%s** (goal < 10 ms: %s) |\n", ms(r.p99), map[bool]string{true: "met", false: "not met"}[r.p99 < 10*time.Millisecond])
	fmt.Fprintf(&b, "| query latency max | %s |\n", ms(r.max))
	fmt.Fprintf(&b, "| throughput | %.0f queries/s |\n", r.qps)
	fmt.Fprintf(&b, "| mean hits per page | %.1f |\n\n", r.meanHits)
	fmt.Fprintf(&b, "Single query shapes, one at a time (p50 / p99 of 200):\n\n| query | p50 | p99 |\n| --- | --- | --- |\n")
	for _, k := range []string{"frequent word", "two-letter prefix", "rare word", "exact name", "empty text, min stars 50"} {
		d := r.byKind[k]
		fmt.Fprintf(&b, "| %s | %s | %s |\n", k, ms(d[0]), ms(d[1]))
	}
	return b.String()
}
