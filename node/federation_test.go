package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/mesh"
	"github.com/hubmesh/hubmesh/upstream"
)

func TestParseFederation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		links, nss, up []string
		want           map[string][]string // link -> namespaces
		wantErr        string
	}{
		{"none", nil, nil, nil, map[string][]string{}, ""},
		{"one", []string{"a=http://a:5000"}, []string{"a=alice,bob"}, nil, map[string][]string{"a": {"alice", "bob"}}, ""},
		{"joined flags", []string{"a=http://a", "b=http://b"}, []string{"a=alice", "bob", "b=carol", "a=dan", "alice"},
			nil, map[string][]string{"a": {"alice", "bob", "dan"}, "b": {"carol"}}, ""},
		{"no namespaces", []string{"a=http://a"}, nil, nil, nil, "no namespaces"},
		{"no url", []string{"a"}, nil, nil, nil, "want NAME=URL"},
		{"bad url", []string{"a=ftp://x"}, []string{"a=x"}, nil, nil, "want http(s)"},
		{"twice", []string{"a=http://a", "a=http://b"}, []string{"a=x"}, nil, nil, "given twice"},
		{"upstream name", []string{"a=http://a"}, []string{"a=x"}, []string{"a=http://u"}, nil, "--upstream name too"},
		{"unknown name", []string{"a=http://a"}, []string{"a=x", "b=y"}, nil, nil, "not a --federate name"},
		{"namespace first", []string{"a=http://a"}, []string{"x"}, nil, nil, "want NAME=NAMESPACE"},
		{"bad namespace", []string{"a=http://a"}, []string{"a=al/ice"}, nil, nil, "is not a namespace"},
		{"upper case", []string{"a=http://a"}, []string{"a=Alice"}, nil, nil, "is not a namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFederation(tt.links, tt.nss, tt.up)
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("parseFederation() error %v, want %q", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			m := map[string][]string{}
			for _, l := range got {
				m[l.name] = l.namespaces
			}
			if fmt.Sprint(m) != fmt.Sprint(tt.want) {
				t.Fatalf("parseFederation() = %v, want %v", m, tt.want)
			}
		})
	}
}

func TestFederationConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds.yaml")
	secrets := filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(creds, []byte("a: {username: u, password: p}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secrets, []byte("a: s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string // from Validate, or else from newFederation
	}{
		{"ok", func(c *Config) {}, ""},
		{"interval", func(c *Config) { c.FederateInterval = 0 }, "federate-interval"},
		{"secrets without links", func(c *Config) { c.Federate, c.FederateNamespaces = nil, nil }, "without --federate"},
		{"secret of unknown link", func(c *Config) { c.FederateSecretFile = creds }, "federate-secret-file"},
		{"credentials of unknown name", func(c *Config) { c.UpstreamCredentialsFile = secrets }, "upstream-credentials-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Federate, c.FederateNamespaces = []string{"a=http://a:5000"}, []string{"a=alice"}
			c.UpstreamCredentialsFile, c.FederateSecretFile = creds, secrets
			tt.edit(&c)
			err := c.Validate()
			if err == nil {
				var f *federation
				f, err = newFederation(c, nil, nil, slog.New(slog.DiscardHandler))
				if err == nil && f != nil {
					if s, _ := f.HookSecret("a"); s != "s3cret" || f.byName["a"].user != "u" {
						t.Errorf("link a: secret %q user %q", s, f.byName["a"].user)
					}
				}
			}
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// ---- a small OCI registry with paging, Basic auth and /api/v1 ----

type fakeOCI struct {
	mu        sync.Mutex
	manifests map[string][]byte // "repo:ref" (tag or digest)
	types     map[digest.Digest]string
	blobs     map[digest.Digest][]byte
	corrupt   map[digest.Digest]bool // served with wrong bytes
	private   map[string]bool
	// probeStatus, when set for a repository, is the HTTP status of its
	// /api/v1/repositories answer (a remote that refuses the probe).
	probeStatus map[string]int
	pageMax     int
}

func newFakeOCI() *fakeOCI {
	return &fakeOCI{manifests: map[string][]byte{}, types: map[digest.Digest]string{}, blobs: map[digest.Digest][]byte{},
		corrupt: map[digest.Digest]bool{}, private: map[string]bool{}, probeStatus: map[string]int{}, pageMax: 2}
}

const fakeUser, fakePass = "mirror", "pw"

// putImage adds an image of one layer under repo:tag and returns its digest.
func (f *fakeOCI) putImage(repo, tag, layer string) (digest.Digest, []hubmesh.Descriptor) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cfg := []byte(`{"architecture":"amd64","os":"linux","layer":"` + layer + `"}`)
	l := []byte("layer " + layer)
	cd, ld := digest.FromBytes(cfg), digest.FromBytes(l)
	f.blobs[cd], f.blobs[ld] = cfg, l
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}`,
		upstream.MediaTypeOCIManifest, cd, len(cfg), ld, len(l))
	d := f.addManifest(repo, tag, upstream.MediaTypeOCIManifest, []byte(m))
	return d, []hubmesh.Descriptor{{Digest: cd, Size: int64(len(cfg))}, {Digest: ld, Size: int64(len(l))}}
}

func (f *fakeOCI) addManifest(repo, tag, mt string, b []byte) digest.Digest {
	d := digest.FromBytes(b)
	f.manifests[repo+":"+d.String()] = b
	f.types[d] = mt
	if tag != "" {
		f.manifests[repo+":"+tag] = b
	}
	return d
}

// putIndex adds an index of two images under repo:tag.
func (f *fakeOCI) putIndex(repo, tag string) digest.Digest {
	a, _ := f.putImage(repo, "", "amd64-"+tag)
	b, _ := f.putImage(repo, "", "arm64-"+tag)
	f.mu.Lock()
	defer f.mu.Unlock()
	sz := func(d digest.Digest) int { return len(f.manifests[repo+":"+d.String()]) }
	idx := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"%s","manifests":[{"mediaType":"%s","digest":"%s","size":%d},{"mediaType":"%s","digest":"%s","size":%d}]}`,
		upstream.MediaTypeOCIIndex, upstream.MediaTypeOCIManifest, a, sz(a), upstream.MediaTypeOCIManifest, b, sz(b))
	return f.addManifest(repo, tag, upstream.MediaTypeOCIIndex, []byte(idx))
}

func (f *fakeOCI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u, p, ok := r.BasicAuth(); !ok || u != fakeUser || p != fakePass {
		w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	path := r.URL.Path
	if repo, ok := strings.CutPrefix(path, "/api/v1/repositories/"); ok {
		if code := f.probeStatus[repo]; code != 0 {
			w.WriteHeader(code)
			return
		}
		if _, ok := f.manifestsOf(repo); !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"is_private": f.private[repo]})
		return
	}
	if path == "/v2/_catalog" {
		set := map[string]bool{}
		for k := range f.manifests {
			set[k[:strings.LastIndex(k, ":")]] = true
		}
		f.page(w, r, "/v2/_catalog", "repositories", set)
		return
	}
	rest := strings.TrimPrefix(path, "/v2/")
	if repo, ok := strings.CutSuffix(rest, "/tags/list"); ok {
		set := map[string]bool{}
		for k := range f.manifests {
			if rp, ref, _ := strings.Cut(k, ":"); rp == repo && !strings.HasPrefix(ref, "sha256") {
				set[ref] = true
			}
		}
		if len(set) == 0 {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		f.page(w, r, "/v2/"+repo+"/tags/list", "tags", set)
		return
	}
	if i := strings.LastIndex(rest, "/manifests/"); i >= 0 {
		b, ok := f.manifests[rest[:i]+":"+rest[i+len("/manifests/"):]]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		d := digest.FromBytes(b)
		w.Header().Set("Content-Type", f.types[d])
		w.Header().Set("Docker-Content-Digest", d.String())
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		if r.Method == http.MethodGet {
			_, _ = w.Write(b)
		}
		return
	}
	if i := strings.LastIndex(rest, "/blobs/"); i >= 0 {
		d := digest.Digest(rest[i+len("/blobs/"):])
		b, ok := f.blobs[d]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if f.corrupt[d] {
			b = append([]byte("x"), b[1:]...)
		}
		_, _ = w.Write(b)
		return
	}
	w.WriteHeader(http.StatusNotFound)
}

func (f *fakeOCI) manifestsOf(repo string) (int, bool) {
	n := 0
	for k := range f.manifests {
		if strings.HasPrefix(k, repo+":") {
			n++
		}
	}
	return n, n > 0
}

// page answers a listing of set in lexical order, at most pageMax at a
// time, with a Link to the next page.
func (f *fakeOCI) page(w http.ResponseWriter, r *http.Request, path, field string, set map[string]bool) {
	var all []string
	for k := range set {
		all = append(all, k)
	}
	sort.Strings(all)
	last := r.URL.Query().Get("last")
	i := sort.SearchStrings(all, last)
	for i < len(all) && all[i] <= last {
		i++
	}
	n := f.pageMax
	if q, err := strconv.Atoi(r.URL.Query().Get("n")); err == nil && q < n {
		n = q
	}
	out := all[i:min(i+n, len(all))]
	if i+n < len(all) {
		w.Header().Set("Link", "<"+path+"?n="+strconv.Itoa(n)+"&last="+url.QueryEscape(out[len(out)-1])+`>; rel="next"`)
	}
	_ = json.NewEncoder(w).Encode(map[string][]string{field: append([]string{}, out...)})
}

// ---- an in-memory fedStore ----

type fakeFedStore struct {
	mu        sync.Mutex
	leader    bool
	repos     map[string]hubmesh.Repository
	manifests map[string]*hubmesh.Manifest // "repo@digest"
	tags      map[string]digest.Digest     // "repo:tag"
	links     map[string]bool              // "repo@blob"
}

func newFakeFedStore() *fakeFedStore {
	return &fakeFedStore{leader: true, repos: map[string]hubmesh.Repository{}, manifests: map[string]*hubmesh.Manifest{},
		tags: map[string]digest.Digest{}, links: map[string]bool{}}
}

func (s *fakeFedStore) IsLeader() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.leader }

func (s *fakeFedStore) Repository(_ context.Context, name string) (hubmesh.Repository, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.repos[name]
	if !ok {
		return r, fmt.Errorf("repository %s: %w", name, hubmesh.ErrRepoUnknown)
	}
	return r, nil
}

func (s *fakeFedStore) CreateRepository(_ context.Context, r hubmesh.Repository) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.repos[r.Name]; ok {
		return hubmesh.ErrExists
	}
	s.repos[r.Name] = r
	return nil
}

func (s *fakeFedStore) UpdateRepository(_ context.Context, name string, upd hubmesh.RepositoryUpdate) (hubmesh.Repository, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.repos[name]
	if !ok {
		return r, fmt.Errorf("repository %s: %w", name, hubmesh.ErrRepoUnknown)
	}
	if upd.IsPrivate != nil {
		r.IsPrivate = *upd.IsPrivate
	}
	s.repos[name] = r
	return r, nil
}

func (s *fakeFedStore) GetManifest(_ context.Context, repo, ref string) (*hubmesh.Manifest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.tags[repo+":"+ref]; ok {
		ref = d.String()
	}
	m, ok := s.manifests[repo+"@"+ref]
	if !ok {
		return nil, fmt.Errorf("%s:%s: %w", repo, ref, hubmesh.ErrManifestUnknown)
	}
	return m, nil
}

// PutManifest checks what the FSM checks: the repository exists, the
// blobs are linked and the children are there.
func (s *fakeFedStore) PutManifest(_ context.Context, m *hubmesh.Manifest, tags []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.repos[m.Repo]; !ok {
		return hubmesh.ErrRepoUnknown
	}
	for _, b := range m.Blobs {
		if !s.links[m.Repo+"@"+b.Digest.String()] {
			return fmt.Errorf("blob %s not linked: %w", b.Digest, hubmesh.ErrInvalid)
		}
	}
	for _, c := range m.Children {
		if _, ok := s.manifests[m.Repo+"@"+c.Digest.String()]; !ok {
			return fmt.Errorf("child %s missing: %w", c.Digest, hubmesh.ErrInvalid)
		}
	}
	s.manifests[m.Repo+"@"+m.Digest.String()] = m
	for _, t := range tags {
		s.tags[m.Repo+":"+t] = m.Digest
	}
	return nil
}

func (s *fakeFedStore) LinkBlobs(_ context.Context, repo string, descs []hubmesh.Descriptor) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range descs {
		s.links[repo+"@"+d.Digest.String()] = true
	}
	return nil
}

func (s *fakeFedStore) tag(repo, tag string) digest.Digest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tags[repo+":"+tag]
}

// newTestFederation links "a" to a fake registry mirroring alice.
func newTestFederation(t *testing.T) (*federation, *fakeOCI, *fakeFedStore, *mesh.Store) {
	t.Helper()
	remote := newFakeOCI()
	srv := httptest.NewServer(remote)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds.yaml")
	if err := os.WriteFile(creds, []byte("a: {username: "+fakeUser+", password: "+fakePass+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testLogWriter{t}, nil))
	content, err := mesh.OpenStore(filepath.Join(dir, "blobs"), log)
	if err != nil {
		t.Fatal(err)
	}
	c := Default()
	c.Federate, c.FederateNamespaces, c.UpstreamCredentialsFile = []string{"a=" + srv.URL}, []string{"a=alice"}, creds
	store := newFakeFedStore()
	f, err := newFederation(c, store, content, log)
	if err != nil {
		t.Fatal(err)
	}
	return f, remote, store, content
}

type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestFederationSweep(t *testing.T) {
	t.Parallel()
	f, remote, store, content := newTestFederation(t)
	ctx := t.Context()

	v1, v1blobs := remote.putImage("alice/app", "v1", "one")
	remote.putImage("alice/app", "v0", "zero")
	idx := remote.putIndex("alice/multi", "latest")
	remote.putImage("alice-x/trap", "v1", "trap") // sorts before alice/
	remote.putImage("alicex/trap", "v1", "trap")  // sorts after alice/
	remote.putImage("bob/app", "v1", "bob")
	remote.putImage("alice/own", "v1", "own")
	remote.private["alice/multi"] = true
	store.repos["alice/own"] = hubmesh.Repository{Name: "alice/own", Namespace: "alice", Description: "pushed here"}

	f.step(ctx)
	if got := store.tag("alice/app", "v1"); got != v1 {
		t.Fatalf("alice/app:v1 = %q, want %s", got, v1)
	}
	if store.tag("alice/app", "v0") == "" || store.tag("alice/multi", "latest") != idx {
		t.Fatalf("alice/app:v0 or alice/multi:latest not copied: %v", store.tags)
	}
	for _, b := range v1blobs {
		if n, err := content.Stat(ctx, b.Digest); err != nil || n != b.Size {
			t.Fatalf("blob %s: %d %v", b.Digest, n, err)
		}
	}
	for _, r := range []string{"alice-x/trap", "alicex/trap", "bob/app"} {
		if _, err := store.Repository(ctx, r); err == nil {
			t.Errorf("%s copied: outside the namespaces", r)
		}
	}
	if store.tag("alice/own", "v1") != "" {
		t.Error("alice/own, a local repository, was overwritten")
	}
	if r := store.repos["alice/app"]; r.IsPrivate || r.Source != hubmesh.SourceFederation+"a" {
		t.Errorf("alice/app created as %+v; want public, federated", r)
	}
	if !store.repos["alice/multi"].IsPrivate {
		t.Error("alice/multi is private on the remote, public here")
	}

	// A new push there, asked for by a webhook before the next sweep.
	v2, _ := remote.putImage("alice/app", "v1", "two")
	if err := f.RequestSync("a", "alice/app"); err != nil {
		t.Fatal(err)
	}
	f.step(ctx)
	if got := store.tag("alice/app", "v1"); got != v2 {
		t.Fatalf("after the hook alice/app:v1 = %q, want %s", got, v2)
	}

	// A tag deleted there stays here.
	remote.mu.Lock()
	delete(remote.manifests, "alice/app:v0")
	remote.mu.Unlock()
	f.nextSweep = time.Time{}
	f.step(ctx)
	if store.tag("alice/app", "v0") == "" {
		t.Error("a tag deleted on the remote was deleted here")
	}
}

func TestFederationCorruptBlob(t *testing.T) {
	t.Parallel()
	f, remote, store, content := newTestFederation(t)
	_, blobs := remote.putImage("alice/app", "v1", "one")
	remote.corrupt[blobs[1].Digest] = true
	err := f.syncRepo(t.Context(), f.byName["a"], "alice/app")
	if !errors.Is(err, hubmesh.ErrDigestMismatch) {
		t.Fatalf("syncRepo with a corrupt blob: %v, want a digest mismatch", err)
	}
	if store.tag("alice/app", "v1") != "" {
		t.Fatal("manifest recorded although a blob failed verification")
	}
	if _, err := content.Stat(t.Context(), blobs[1].Digest); err == nil {
		t.Fatal("corrupt blob stored")
	}
}

func TestFederationRequestSync(t *testing.T) {
	t.Parallel()
	f, _, _, _ := newTestFederation(t)
	tests := []struct {
		link, repo string
		want       error
	}{
		{"a", "alice/app", nil},
		{"a", "bob/app", hubmesh.ErrDenied},
		{"a", "alice", hubmesh.ErrDenied},
		{"zz", "alice/app", hubmesh.ErrNotFound},
	}
	for _, tt := range tests {
		if err := f.RequestSync(tt.link, tt.repo); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("RequestSync(%s, %s) = %v, want %v", tt.link, tt.repo, err, tt.want)
		}
	}
	if !slices.Equal([]int{len(f.pending)}, []int{1}) {
		t.Fatalf("pending %v, want one request", f.pending)
	}
}

// TestFederationFollowerIdles checks that the worker of a node that does
// not lead keeps what it is asked for, and copies once the node leads.
func TestFederationFollowerIdles(t *testing.T) {
	t.Parallel()
	f, remote, store, _ := newTestFederation(t)
	v1, _ := remote.putImage("alice/app", "v1", "one")
	store.leader = false
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	if err := f.RequestSync("a", "alice/app"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	store.mu.Lock()
	store.leader = true
	store.mu.Unlock()
	for store.tag("alice/app", "v1") != v1 {
		if time.Now().After(deadline) {
			t.Fatal("leader did not copy alice/app:v1 within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestFederationPrivacyProbe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
	}{
		{"rate limited", http.StatusTooManyRequests},
		{"forbidden", http.StatusForbidden},
		{"unauthorized", http.StatusUnauthorized},
		{"server error", http.StatusBadGateway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, remote, store, _ := newTestFederation(t)
			remote.putImage("alice/secret", "v1", "s")
			remote.private["alice/secret"] = true
			remote.probeStatus["alice/secret"] = tt.status
			f.step(t.Context())
			if r, err := store.Repository(t.Context(), "alice/secret"); err == nil {
				t.Fatalf("probe answered %d: repository created as %+v, want none until the probe answers", tt.status, r)
			}
			if f.backoff == 0 {
				t.Error("a failed probe did not make the sweep retry sooner")
			}
			// Once the remote answers, the copy is made, private.
			remote.mu.Lock()
			delete(remote.probeStatus, "alice/secret")
			remote.mu.Unlock()
			f.nextSweep = time.Time{}
			f.step(t.Context())
			if r := store.repos["alice/secret"]; !r.IsPrivate || store.tag("alice/secret", "v1") == "" {
				t.Fatalf("after the probe answered: %+v, tag %q; want a private copy", r, store.tag("alice/secret", "v1"))
			}
		})
	}
}

func TestFederationRemoteTurnsPrivate(t *testing.T) {
	t.Parallel()
	f, remote, store, _ := newTestFederation(t)
	ctx := t.Context()
	remote.putImage("alice/app", "v1", "one")
	store.repos["alice/other"] = hubmesh.Repository{Name: "alice/other", Namespace: "alice", Source: hubmesh.SourceFederation + "b"}
	remote.putImage("alice/other", "v1", "other")
	f.step(ctx)
	if r := store.repos["alice/app"]; r.IsPrivate {
		t.Fatalf("alice/app created private: %+v", r)
	}
	if store.tag("alice/other", "v1") != "" {
		t.Error("alice/other, another link's copy, was overwritten")
	}

	// Nothing new to copy: the privacy is re-checked all the same.
	remote.mu.Lock()
	remote.private["alice/app"] = true
	remote.mu.Unlock()
	f.nextSweep = time.Time{}
	f.step(ctx)
	if !store.repos["alice/app"].IsPrivate {
		t.Fatal("alice/app became private on the remote and stayed public here")
	}

	// A probe that fails later does not make it public again.
	remote.mu.Lock()
	remote.probeStatus["alice/app"] = http.StatusTooManyRequests
	remote.mu.Unlock()
	f.nextSweep = time.Time{}
	f.step(ctx)
	if !store.repos["alice/app"].IsPrivate {
		t.Fatal("alice/app made public by a failed probe")
	}
}
