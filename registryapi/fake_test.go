package registryapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// memRegistry is a small real implementation of every interface the API
// consumes: map-backed, content verified by digest on commit, links per
// repository, upload sessions local to it. fail, when set, is returned by
// every call (to test error mapping).
type memRegistry struct {
	mu      sync.Mutex
	repos   map[string]*memRepo
	blobs   map[digest.Digest][]byte
	uploads map[string]*memUpload
	nextID  int
	algs    []digest.Algorithm // algorithm of every session created, in order
	fail    error
}

type memRepo struct {
	manifests map[digest.Digest]*hubmesh.Manifest
	tags      map[string]digest.Digest
	links     map[digest.Digest]hubmesh.Descriptor
}

func newMemRegistry() *memRegistry {
	return &memRegistry{
		repos:   map[string]*memRepo{},
		blobs:   map[digest.Digest][]byte{},
		uploads: map[string]*memUpload{},
	}
}

func (m *memRegistry) setFail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail = err
}

// repo returns repo, creating it when create is set; nil if missing.
func (m *memRegistry) repo(name string, create bool) *memRepo {
	r := m.repos[name]
	if r == nil && create {
		r = &memRepo{
			manifests: map[digest.Digest]*hubmesh.Manifest{},
			tags:      map[string]digest.Digest{},
			links:     map[digest.Digest]hubmesh.Descriptor{},
		}
		m.repos[name] = r
	}
	return r
}

// stored returns a copy of the manifest as the API handed it over.
func (m *memRegistry) stored(repo string, d digest.Digest) *hubmesh.Manifest {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.repo(repo, false)
	if r == nil || r.manifests[d] == nil {
		return nil
	}
	c := *r.manifests[d]
	return &c
}

// GetManifest implements Manifests.
func (m *memRegistry) GetManifest(_ context.Context, repo, ref string) (*hubmesh.Manifest, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	r := m.repo(repo, false)
	if r == nil {
		return nil, fmt.Errorf("get %s: %w", repo, hubmesh.ErrRepoUnknown)
	}
	d := digest.Digest(ref)
	if !strings.Contains(ref, ":") {
		var ok bool
		if d, ok = r.tags[ref]; !ok {
			return nil, fmt.Errorf("get %s:%s: %w", repo, ref, hubmesh.ErrManifestUnknown)
		}
	}
	man, ok := r.manifests[d]
	if !ok {
		return nil, fmt.Errorf("get %s@%s: %w", repo, ref, hubmesh.ErrManifestUnknown)
	}
	c := *man
	return &c, nil
}

// PutManifest implements Manifests.
func (m *memRegistry) PutManifest(_ context.Context, man *hubmesh.Manifest, tags []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	r := m.repo(man.Repo, false)
	for _, b := range man.Blobs {
		if r == nil {
			return fmt.Errorf("blob %s: %w", b.Digest, hubmesh.ErrManifestBlobUnknown)
		}
		if _, ok := r.links[b.Digest]; !ok {
			return fmt.Errorf("blob %s: %w", b.Digest, hubmesh.ErrManifestBlobUnknown)
		}
	}
	for _, c := range man.Children {
		if r == nil || r.manifests[c.Digest] == nil {
			return fmt.Errorf("child %s: %w", c.Digest, hubmesh.ErrManifestUnknown)
		}
	}
	r = m.repo(man.Repo, true)
	c := *man
	c.Payload = bytes.Clone(man.Payload)
	r.manifests[man.Digest] = &c
	for _, t := range tags {
		r.tags[t] = man.Digest
	}
	return nil
}

// DeleteManifest implements Manifests.
func (m *memRegistry) DeleteManifest(_ context.Context, repo string, d digest.Digest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	r := m.repo(repo, false)
	if r == nil || r.manifests[d] == nil {
		return fmt.Errorf("delete %s@%s: %w", repo, d, hubmesh.ErrManifestUnknown)
	}
	delete(r.manifests, d)
	for t, td := range r.tags {
		if td == d {
			delete(r.tags, t)
		}
	}
	return nil
}

// DeleteTag implements Manifests.
func (m *memRegistry) DeleteTag(_ context.Context, repo, tag string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	r := m.repo(repo, false)
	if r == nil {
		return fmt.Errorf("delete %s:%s: %w", repo, tag, hubmesh.ErrRepoUnknown)
	}
	if _, ok := r.tags[tag]; !ok {
		return fmt.Errorf("delete %s:%s: %w", repo, tag, hubmesh.ErrManifestUnknown)
	}
	delete(r.tags, tag)
	return nil
}

// Referrers implements Manifests.
func (m *memRegistry) Referrers(_ context.Context, repo string, d digest.Digest, artifactType string) ([]hubmesh.Descriptor, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	r := m.repo(repo, false)
	if r == nil {
		return nil, fmt.Errorf("referrers %s: %w", repo, hubmesh.ErrRepoUnknown)
	}
	var out []hubmesh.Descriptor
	for _, man := range r.manifests {
		if man.Subject == d && (artifactType == "" || man.ArtifactType == artifactType) {
			out = append(out, man.Descriptor())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

// Tags implements Listings.
func (m *memRegistry) Tags(_ context.Context, repo string, p hubmesh.Page) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	r := m.repo(repo, false)
	if r == nil {
		return nil, fmt.Errorf("tags %s: %w", repo, hubmesh.ErrRepoUnknown)
	}
	var all []string
	for t := range r.tags {
		all = append(all, t)
	}
	return pageOf(all, p), nil
}

// Repositories implements Listings.
func (m *memRegistry) Repositories(_ context.Context, p hubmesh.Page) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	var all []string
	for name := range m.repos {
		all = append(all, name)
	}
	return pageOf(all, p), nil
}

func pageOf(all []string, p hubmesh.Page) []string {
	slices.Sort(all)
	var out []string
	for _, s := range all {
		if s > p.Last && (p.N <= 0 || len(out) < p.N) {
			out = append(out, s)
		}
	}
	return out
}

// StatBlob implements BlobLinks.
func (m *memRegistry) StatBlob(_ context.Context, repo string, d digest.Digest) (hubmesh.Descriptor, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return hubmesh.Descriptor{}, m.fail
	}
	if r := m.repo(repo, false); r != nil {
		if desc, ok := r.links[d]; ok {
			return desc, nil
		}
	}
	return hubmesh.Descriptor{}, fmt.Errorf("stat %s@%s: %w", repo, d, hubmesh.ErrBlobUnknown)
}

// LinkBlob implements BlobLinks.
func (m *memRegistry) LinkBlob(_ context.Context, repo string, desc hubmesh.Descriptor) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	if _, ok := m.blobs[desc.Digest]; !ok {
		return fmt.Errorf("link %s: content missing: %w", desc.Digest, hubmesh.ErrBlobUnknown)
	}
	m.repo(repo, true).links[desc.Digest] = desc
	return nil
}

// MountBlob implements BlobLinks.
func (m *memRegistry) MountBlob(_ context.Context, repo, from string, d digest.Digest) (hubmesh.Descriptor, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return hubmesh.Descriptor{}, m.fail
	}
	for name, r := range m.repos {
		if from != "" && name != from {
			continue
		}
		if desc, ok := r.links[d]; ok {
			m.repo(repo, true).links[d] = desc
			return desc, nil
		}
	}
	return hubmesh.Descriptor{}, fmt.Errorf("mount %s from %q: %w", d, from, hubmesh.ErrBlobUnknown)
}

// UnlinkBlob implements BlobLinks.
func (m *memRegistry) UnlinkBlob(_ context.Context, repo string, d digest.Digest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	r := m.repo(repo, false)
	if r == nil {
		return fmt.Errorf("unlink %s: %w", repo, hubmesh.ErrRepoUnknown)
	}
	if _, ok := r.links[d]; !ok {
		return fmt.Errorf("unlink %s@%s: %w", repo, d, hubmesh.ErrBlobUnknown)
	}
	delete(r.links, d)
	return nil
}

type readSeekNopCloser struct{ *bytes.Reader }

func (readSeekNopCloser) Close() error { return nil }

// Open implements Blobs.
func (m *memRegistry) Open(_ context.Context, d digest.Digest) (io.ReadSeekCloser, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, 0, m.fail
	}
	b, ok := m.blobs[d]
	if !ok {
		return nil, 0, fmt.Errorf("open %s: %w", d, hubmesh.ErrBlobUnknown)
	}
	return readSeekNopCloser{bytes.NewReader(b)}, int64(len(b)), nil
}

// Stat implements Blobs.
func (m *memRegistry) Stat(_ context.Context, d digest.Digest) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[d]
	if !ok {
		return 0, fmt.Errorf("stat %s: %w", d, hubmesh.ErrBlobUnknown)
	}
	return int64(len(b)), nil
}

// Create implements Uploads.
func (m *memRegistry) Create(_ context.Context, repo string, alg digest.Algorithm) (Upload, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	m.nextID++
	u := &memUpload{reg: m, repo: repo, id: "u-" + strconv.Itoa(m.nextID), alg: alg}
	m.uploads[u.id] = u
	m.algs = append(m.algs, alg)
	return u, nil
}

// Get implements Uploads.
func (m *memRegistry) Get(_ context.Context, repo, id string) (Upload, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	u, ok := m.uploads[id]
	if !ok || u.repo != repo {
		return nil, fmt.Errorf("upload %s: %w", id, hubmesh.ErrUploadUnknown)
	}
	return u, nil
}

func (m *memRegistry) sessions() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.uploads)
}

// memUpload is one session: appends are serialised and all-or-nothing.
type memUpload struct {
	reg  *memRegistry
	repo string
	id   string
	alg  digest.Algorithm
	mu   sync.Mutex
	buf  []byte
}

func (u *memUpload) ID() string { return u.id }

func (u *memUpload) Size() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return int64(len(u.buf))
}

func (u *memUpload) Append(_ context.Context, offset int64, r io.Reader) (int64, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if offset != int64(len(u.buf)) {
		return int64(len(u.buf)), fmt.Errorf("append at %d, have %d: %w", offset, len(u.buf), hubmesh.ErrRangeInvalid)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return int64(len(u.buf)), fmt.Errorf("append to %s: %w", u.id, err)
	}
	u.buf = append(u.buf, data...)
	return int64(len(u.buf)), nil
}

func (u *memUpload) Commit(_ context.Context, d digest.Digest) (hubmesh.Descriptor, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !d.Algorithm().Available() {
		return hubmesh.Descriptor{}, fmt.Errorf("commit %s: algorithm: %w", d, hubmesh.ErrInvalid)
	}
	// the session hashes with the digest's algorithm, whatever was announced
	if got := d.Algorithm().FromBytes(u.buf); got != d {
		return hubmesh.Descriptor{}, fmt.Errorf("commit: content is %s: %w", got, hubmesh.ErrDigestMismatch)
	}
	u.reg.mu.Lock()
	defer u.reg.mu.Unlock()
	u.reg.blobs[d] = bytes.Clone(u.buf)
	delete(u.reg.uploads, u.id)
	return hubmesh.Descriptor{MediaType: "application/octet-stream", Digest: d, Size: int64(len(u.buf))}, nil
}

func (u *memUpload) Cancel(context.Context) error {
	u.reg.mu.Lock()
	defer u.reg.mu.Unlock()
	if _, ok := u.reg.uploads[u.id]; !ok {
		return fmt.Errorf("cancel %s: %w", u.id, hubmesh.ErrUploadUnknown)
	}
	delete(u.reg.uploads, u.id)
	return nil
}
