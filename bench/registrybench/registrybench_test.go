package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		str  string
	}{
		{"128MiB", 128 << 20, "128MiB"},
		{"1G", 1 << 30, "1GiB"},
		{"512KiB", 512 << 10, "512KiB"},
		{"4096", 4096, "4KiB"},
		{"1000B", 1000, "1000B"},
		{" 2 MiB", 2 << 20, "2MiB"},
	} {
		var b byteSize
		if err := b.Set(tc.in); err != nil {
			t.Fatalf("Set(%q): %v", tc.in, err)
		}
		if int64(b) != tc.want || b.String() != tc.str {
			t.Errorf("Set(%q) = %d %q, want %d %q", tc.in, b, b, tc.want, tc.str)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "1.5MiB", "12XB", "99999999999GiB"} {
		var b byteSize
		if err := b.Set(bad); err == nil {
			t.Errorf("Set(%q) = %d, want an error", bad, b)
		}
	}
}

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{"-layer-size", "8MiB", "-rounds", "3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.layerSize != 8<<20 || c.rounds != 3 || c.layers != 4 || c.manifests != 2000 {
		t.Errorf("got %+v", c)
	}
	_, err = parseFlags([]string{"-rounds", "0", "-layer-size", "8", "-concurrency", "0", "extra"}, io.Discard)
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"-rounds 0", "-layer-size 8B", "-concurrency 0", `"extra"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestMedianPercentile(t *testing.T) {
	if got := median([]float64{5, 1, 3}); got != 3 {
		t.Errorf("median odd = %v", got)
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median even = %v", got)
	}
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[i] = time.Duration(100-i) * time.Millisecond
	}
	if p50, p99, p100 := percentile(ds, 50), percentile(ds, 99), percentile(ds, 100); p50 != 50*time.Millisecond ||
		p99 != 99*time.Millisecond || p100 != 100*time.Millisecond {
		t.Errorf("p50 %v p99 %v p100 %v", p50, p99, p100)
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("percentile of one = %v", got)
	}
}

func TestProcParsing(t *testing.T) {
	status := "Name:\tregistry\nVmHWM:\t   86228 kB\nVmRSS:\t   42112 kB\n"
	if got, err := parseStatusKB([]byte(status), "VmRSS"); err != nil || got != 42112*1024 {
		t.Errorf("VmRSS = %d, %v", got, err)
	}
	if _, err := parseStatusKB([]byte(status), "VmSwap"); err == nil {
		t.Error("missing field: want an error")
	}
	// comm with a space and a ')' must not shift the fields; utime 250 + stime 50 ticks.
	stat := "4242 (my reg) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 0 0"
	if got, err := parseStatCPU([]byte(stat)); err != nil || got != 3*time.Second {
		t.Errorf("cpu = %v, %v", got, err)
	}
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:A4C5 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0 100 0 0 10 0
   2: 0100007F:A4C5 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0 20 4 30 10 -1
`
	got, err := parseListening([]byte(table), map[string]bool{"111": true, "333": true})
	if err != nil || len(got) != 1 || got[0] != 0xA4C5 {
		t.Errorf("listening = %v, %v; want [%d] (inode 222 is another process's, 333 is not listening)", got, err, 0xA4C5)
	}
}

func TestListeningPortsFindsOwnListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ports, err := listeningPorts(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	want := ln.Addr().(*net.TCPAddr).Port
	for _, p := range ports {
		if p == want {
			return
		}
	}
	t.Errorf("ports %v do not include the test's listener %d", ports, want)
}

func TestSaltGivesFreshDigests(t *testing.T) {
	dir := t.TempDir()
	ls, err := generateLayers(dir, 3, 4096, 1)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[digest.Digest]bool{}
	for round := range uint64(2) {
		blobs, err := ls.salt(7, round)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range blobs {
			data, err := os.ReadFile(b.path)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(data)) != b.desc.Size || digest.FromBytes(data) != b.desc.Digest {
				t.Errorf("%s: descriptor %v does not match the file", filepath.Base(b.path), b.desc)
			}
			if seen[b.desc.Digest] {
				t.Errorf("digest %s repeats across layers or rounds", b.desc.Digest)
			}
			seen[b.desc.Digest] = true
		}
	}
}

// fakeRegistry is a minimal in-memory OCI registry: POST+PUT uploads,
// manifest PUT/GET and blob GET, checking what a real registry checks.
type fakeRegistry struct {
	mu        sync.Mutex
	blobs     map[digest.Digest][]byte
	manifests map[string][]byte
	uploads   int
	corrupt   bool // serve blobs with their first byte flipped
}

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{blobs: map[digest.Digest][]byte{}, manifests: map[string][]byte{}}
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := r.URL.Path
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/blobs/uploads/"):
		f.uploads++
		w.Header().Set("Location", p+strconv.Itoa(f.uploads)+"?_state=kept")
		w.WriteHeader(http.StatusAccepted)
	case r.Method == http.MethodPut && strings.Contains(p, "/blobs/uploads/"):
		body, _ := io.ReadAll(r.Body)
		want, err := digest.Parse(r.URL.Query().Get("digest"))
		if err != nil || r.URL.Query().Get("_state") != "kept" || digest.FromBytes(body) != want ||
			r.ContentLength != int64(len(body)) {
			http.Error(w, "DIGEST_INVALID", http.StatusBadRequest)
			return
		}
		f.blobs[want] = body
		w.WriteHeader(http.StatusCreated)
	case strings.Contains(p, "/manifests/"):
		if r.Method == http.MethodGet {
			m, ok := f.manifests[p]
			if !ok {
				http.NotFound(w, r)
				return
			}
			_, _ = w.Write(m)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var m v1.Manifest
		if r.Header.Get("Content-Type") != v1.MediaTypeImageManifest || json.Unmarshal(body, &m) != nil {
			http.Error(w, "MANIFEST_INVALID", http.StatusBadRequest)
			return
		}
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if _, ok := f.blobs[d.Digest]; !ok {
				http.Error(w, "MANIFEST_BLOB_UNKNOWN", http.StatusBadRequest)
				return
			}
		}
		f.manifests[p] = body
		w.WriteHeader(http.StatusCreated)
	case r.Method == http.MethodGet && strings.Contains(p, "/blobs/"):
		b, ok := f.blobs[digest.Digest(p[strings.LastIndex(p, "/")+1:])]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if f.corrupt {
			b = append([]byte{b[0] ^ 1}, b[1:]...)
		}
		_, _ = w.Write(b)
	default:
		http.Error(w, "UNSUPPORTED", http.StatusMethodNotAllowed)
	}
}

func TestPushPullRoundTrip(t *testing.T) {
	reg := newFakeRegistry()
	srv := httptest.NewServer(reg)
	defer srv.Close()
	cl := newClient(srv.URL, 4)
	defer cl.close()

	ls, err := generateLayers(t.TempDir(), 5, 64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := ls.salt(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	img, err := newImage(blobs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.push(t.Context(), "bench/image", "r0", img); err != nil {
		t.Fatal(err)
	}
	if reg.uploads != 6 || len(reg.blobs) != 6 {
		t.Errorf("registry got %d uploads, %d blobs; want 6 and 6 (5 layers and the config)", reg.uploads, len(reg.blobs))
	}
	n, err := cl.pull(t.Context(), "bench/image", "r0", img.digest)
	if err != nil || n != 5*64<<10 {
		t.Fatalf("pull = %d, %v; want %d bytes", n, err, 5*64<<10)
	}

	if _, err := cl.pull(t.Context(), "bench/image", "r0", digest.FromString("other")); err == nil ||
		!strings.Contains(err.Error(), "pushed") {
		t.Errorf("pull of a manifest with another digest: err %v, want a digest mismatch", err)
	}
	reg.mu.Lock()
	reg.corrupt = true
	reg.mu.Unlock()
	if _, err := cl.pull(t.Context(), "bench/image", "r0", img.digest); err == nil ||
		!strings.Contains(err.Error(), "content has digest") {
		t.Errorf("pull of corrupted blobs: err %v, want a digest mismatch", err)
	}
	if _, err := cl.pull(t.Context(), "bench/image", "nope", img.digest); err == nil ||
		!strings.Contains(err.Error(), "404") {
		t.Errorf("pull of a missing tag: err %v, want the 404", err)
	}
}

func TestManifestPuts(t *testing.T) {
	reg := newFakeRegistry()
	srv := httptest.NewServer(reg)
	defer srv.Close()
	cl := newClient(srv.URL, 4)
	defer cl.close()

	run, err := cl.manifestPuts(t.Context(), "bench/m", 50, 8)
	if err != nil {
		t.Fatal(err)
	}
	if len(run.lat) != 50 || len(reg.manifests) != 50 || len(reg.blobs) != 2 {
		t.Errorf("%d latencies, %d manifests, %d blobs; want 50, 50, 2", len(run.lat), len(reg.manifests), len(reg.blobs))
	}
	for i, d := range run.lat {
		if d <= 0 || d > run.elapsed {
			t.Errorf("latency %d = %v outside (0, %v]", i, d, run.elapsed)
		}
	}
}

func TestReportRenders(t *testing.T) {
	cfg, err := parseFlags([]string{"-rounds", "2", "-manifests", "3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name string, push float64) *target {
		lat := []time.Duration{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond}
		return &target{name: name, res: result{
			version: name + " 1.0", idleRSS: 30 << 20, peakRSS: 90 << 20,
			push: []float64{push, push + 10}, pull: []float64{900, 1000},
			pushCPU: []time.Duration{time.Second, time.Second}, pullCPU: []time.Duration{time.Second, time.Second},
			seq:  manifestRun{lat: lat, elapsed: 6 * time.Millisecond},
			conc: manifestRun{lat: lat, elapsed: 3 * time.Millisecond},
		}}
	}
	r := report{cfg: cfg, env: probeEnv(t.TempDir()), targets: []*target{mk("hubmesh", 600), mk("distribution", 500)}}
	var b strings.Builder
	r.render(&b)
	doc := r.document(b.String())
	for _, want := range []string{
		"| push (MiB/s) | 605 | 505 | 1.20x |",
		"| pull (MiB/s) | 950 | 950 | 1.00x |",
		"| manifest PUT p50, sequential (ms) | 2.00 | 2.00 | 1.00x |",
		"| manifest PUTs/s, 16 concurrent | 1000 | 1000 | 1.00x |",
		"| idle RSS (MiB) | 30.0 | 30.0 | 1.00x |",
		"| 2 | 610 / 1000 | 510 / 1000 |",
		"make bench",
		"[benchmarks-mesh.md](benchmarks-mesh.md)",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks %q:\n%s", want, doc)
		}
	}
}

func TestPrefault(t *testing.T) {
	if got := prefaultSize(4<<30, 24<<30); got != 6<<30 {
		t.Errorf("prefaultSize(4GiB, 24GiB avail) = %d, want 6GiB", got)
	}
	if got := prefaultSize(4<<30, 5<<30); got != 3<<30 {
		t.Errorf("prefaultSize(4GiB, 5GiB avail) = %d, want 3GiB (2GiB left alone)", got)
	}
	if got := prefaultSize(4<<30, 1<<30); got != 0 {
		t.Errorf("prefaultSize(4GiB, 1GiB avail) = %d, want 0", got)
	}
	for in, want := range map[string]string{"auto": "auto", "0": "0B", "3GiB": "3GiB"} {
		var p prefaultFlag
		if err := p.Set(in); err != nil || p.String() != want {
			t.Errorf("Set(%q): %q, %v; want %q", in, p.String(), err, want)
		}
	}
	if _, err := prefault(t.Context(), 5<<20+1); err != nil {
		t.Fatal(err)
	}
}
