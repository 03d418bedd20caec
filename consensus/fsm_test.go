package consensus

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// fsmHarness drives a stateMachine with raft.Log entries, without Raft.
type fsmHarness struct {
	t     *testing.T
	dir   string
	f     *stateMachine
	index uint64
}

func newFSM(t *testing.T) *fsmHarness {
	t.Helper()
	h := &fsmHarness{t: t, dir: t.TempDir()}
	h.open()
	return h
}

func (h *fsmHarness) open() {
	h.t.Helper()
	f, err := openStateMachine(h.dir, testLogger(h.t))
	if err != nil {
		h.t.Fatal(err)
	}
	h.f = f
	h.t.Cleanup(func() { _ = f.close() })
}

func (h *fsmHarness) reopen() {
	h.t.Helper()
	if err := h.f.close(); err != nil {
		h.t.Fatal(err)
	}
	h.open()
}

func (h *fsmHarness) entry(c Command) *raft.Log {
	h.t.Helper()
	data, err := Encode(c)
	if err != nil {
		h.t.Fatal(err)
	}
	h.index++
	return &raft.Log{Index: h.index, Term: 1, Type: raft.LogCommand, Data: data}
}

// apply applies c as the next entry and returns the FSM's response.
func (h *fsmHarness) apply(c Command) any {
	h.t.Helper()
	return h.f.ApplyBatch([]*raft.Log{h.entry(c)})[0]
}

func (h *fsmHarness) mustApply(c Command) any {
	h.t.Helper()
	res := h.apply(c)
	if err, ok := res.(error); ok {
		h.t.Fatalf("apply %v: %v", c.Type(), err)
	}
	return res
}

func (h *fsmHarness) applyErr(c Command) error {
	h.t.Helper()
	res := h.apply(c)
	err, ok := res.(error)
	if !ok {
		h.t.Fatalf("apply %v: got %v, want an error", c.Type(), res)
	}
	return err
}

// dump returns every key and value of the FSM.
// mustHalt applies a committed entry carrying data and fails the test
// unless ApplyBatch panics without changing the state or the applied index.
func (h *fsmHarness) mustHalt(data []byte) {
	h.t.Helper()
	before := h.dump()
	func() {
		defer func() {
			if recover() == nil {
				h.t.Fatal("ApplyBatch did not panic on an undecodable entry")
			}
		}()
		h.f.ApplyBatch([]*raft.Log{{Index: h.index + 1, Type: raft.LogCommand, Data: data}})
	}()
	if h.f.applied.Load() != h.index || !maps.Equal(before, h.dump()) {
		h.t.Fatal("a panicking batch changed the state")
	}
}

func (h *fsmHarness) dump() map[string]string {
	h.t.Helper()
	out := map[string]string{}
	err := h.f.read(func(r reader) error {
		return scan(r, []byte{}, nil, 0, func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

func blobDesc(content string) hubmesh.Descriptor {
	return hubmesh.Descriptor{
		MediaType: "application/vnd.oci.image.layer.v1.tar",
		Digest:    digest.FromString(content),
		Size:      int64(len(content)),
	}
}

var created = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// imageManifest builds an image manifest in repo over blobs; name makes the
// payload (and so the digest) unique.
func imageManifest(repo, name string, blobs ...hubmesh.Descriptor) *hubmesh.Manifest {
	payload, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"layers":        blobs,
		"annotations":   map[string]string{"name": name},
	})
	return &hubmesh.Manifest{
		Repo:         repo,
		Digest:       digest.FromBytes(payload),
		MediaType:    "application/vnd.oci.image.manifest.v1+json",
		Payload:      payload,
		ArtifactType: "application/vnd.oci.image.config.v1+json",
		Blobs:        blobs,
		Created:      created,
	}
}

func indexManifest(repo string, children ...*hubmesh.Manifest) *hubmesh.Manifest {
	var descs []hubmesh.Descriptor
	for _, c := range children {
		descs = append(descs, c.Descriptor())
	}
	payload, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     descs,
	})
	return &hubmesh.Manifest{
		Repo:      repo,
		Digest:    digest.FromBytes(payload),
		MediaType: "application/vnd.oci.image.index.v1+json",
		Payload:   payload,
		Children:  descs,
		Created:   created,
	}
}

func TestFSMPutManifest(t *testing.T) {
	h := newFSM(t)
	layer := blobDesc("layer")
	h.mustApply(&LinkBlobs{Repo: "alice/app", Blobs: []hubmesh.Descriptor{layer}, Node: "n1"})
	m := imageManifest("alice/app", "v1", layer)
	h.mustApply(&PutManifest{Manifest: *m, Tags: []string{"1.0", "latest"}})

	for _, ref := range []string{"1.0", "latest", m.Digest.String()} {
		got, err := h.f.getManifest("alice/app", ref)
		if err != nil {
			t.Fatalf("get %s: %v", ref, err)
		}
		if string(got.Payload) != string(m.Payload) || got.Digest != m.Digest || got.MediaType != m.MediaType ||
			!got.Created.Equal(created) || len(got.Blobs) != 1 || got.Blobs[0].Digest != layer.Digest {
			t.Fatalf("get %s: got %+v, want %+v", ref, got, m)
		}
	}
	tags, err := h.f.tags("alice/app", hubmesh.Page{})
	if err != nil || strings.Join(tags, ",") != "1.0,latest" {
		t.Fatalf("tags = %q, %v", tags, err)
	}
	repos, err := h.f.repositories(hubmesh.Page{})
	if err != nil || strings.Join(repos, ",") != "alice/app" {
		t.Fatalf("repositories = %q, %v", repos, err)
	}
	r, mf, b, err := h.f.counts()
	if err != nil || r != 1 || mf != 1 || b != 1 {
		t.Fatalf("counts = %d %d %d %v, want 1 1 1", r, mf, b, err)
	}

	// An index over the manifest, in the same repository.
	idx := indexManifest("alice/app", m)
	h.mustApply(&PutManifest{Manifest: *idx, Tags: []string{"multi"}})
	if got, err := h.f.getManifest("alice/app", "multi"); err != nil || got.Digest != idx.Digest {
		t.Fatalf("get index: %v, %v", got, err)
	}

	// Putting the same manifest again is idempotent.
	before := h.dump()
	h.mustApply(&PutManifest{Manifest: *m, Tags: []string{"1.0"}})
	after := h.dump()
	delete(before, string(keyApplied))
	delete(after, string(keyApplied))
	if !maps.Equal(before, after) {
		t.Fatal("re-putting the same manifest changed the state")
	}
}

func TestFSMGetManifestErrors(t *testing.T) {
	h := newFSM(t)
	m := imageManifest("alice/app", "v1")
	h.mustApply(&PutManifest{Manifest: *m, Tags: []string{"1.0"}})
	for _, tc := range []struct {
		repo, ref string
		want      error
	}{
		{"alice/app", "2.0", hubmesh.ErrManifestUnknown},
		{"alice/app", digest.FromString("x").String(), hubmesh.ErrManifestUnknown},
		{"bob/app", "1.0", hubmesh.ErrManifestUnknown},
		{"alice/app", "sha256:short", hubmesh.ErrInvalid},
		{"alice/app", "-bad", hubmesh.ErrInvalid},
		{"Alice/App", "1.0", hubmesh.ErrInvalid},
		{"../etc", "1.0", hubmesh.ErrInvalid},
	} {
		_, err := h.f.getManifest(tc.repo, tc.ref)
		if !errors.Is(err, tc.want) {
			t.Errorf("get %s:%s: %v, want %v", tc.repo, tc.ref, err, tc.want)
		}
	}
	if _, err := h.f.tags("bob/app", hubmesh.Page{}); !errors.Is(err, hubmesh.ErrRepoUnknown) {
		t.Errorf("tags of unknown repo: %v", err)
	}
}

// TestFSMRejectionsWriteNothing checks every rejected command: its error
// reaches the proposer and only the applied index changes.
func TestFSMRejectionsWriteNothing(t *testing.T) {
	layer := blobDesc("layer")
	other := blobDesc("other")
	good := imageManifest("alice/app", "v1", layer)
	unknownBlob := imageManifest("alice/app", "v2", layer, other)
	orphanIndex := indexManifest("alice/app", imageManifest("alice/app", "never-pushed"))
	wrongDigest := *good
	wrongDigest.Digest = digest.FromString("not the payload")
	tooBig := imageManifest("alice/app", strings.Repeat("x", hubmesh.MaxManifestSize))
	inOtherRepo := imageManifest("bob/app", "v1", layer) // layer is linked in alice/app only

	for _, tc := range []struct {
		name    string
		cmd     Command
		want    error
		message string // must appear in the error
	}{
		{"manifest blob unknown", &PutManifest{Manifest: *unknownBlob, Tags: []string{"t"}}, hubmesh.ErrManifestBlobUnknown, other.Digest.String()},
		{"manifest blob linked elsewhere", &PutManifest{Manifest: *inOtherRepo}, hubmesh.ErrManifestBlobUnknown, layer.Digest.String()},
		{"index child unknown", &PutManifest{Manifest: *orphanIndex}, hubmesh.ErrManifestUnknown, orphanIndex.Children[0].Digest.String()},
		{"digest mismatch", &PutManifest{Manifest: wrongDigest}, hubmesh.ErrDigestMismatch, ""},
		{"manifest too big", &PutManifest{Manifest: *tooBig}, hubmesh.ErrSizeInvalid, ""},
		{"bad tag", &PutManifest{Manifest: *good, Tags: []string{"ok", "bad tag"}}, hubmesh.ErrInvalid, "bad tag"},
		{"bad repo", &PutManifest{Manifest: func() hubmesh.Manifest { m := *good; m.Repo = "UPPER"; return m }()}, hubmesh.ErrInvalid, "UPPER"},
		{"delete unknown manifest", &DeleteManifest{Repo: "alice/app", Digest: other.Digest}, hubmesh.ErrManifestUnknown, ""},
		{"delete unknown tag", &DeleteTag{Repo: "alice/app", Tag: "nope"}, hubmesh.ErrManifestUnknown, "nope"},
		{"link size conflict", &LinkBlobs{Repo: "bob/app", Blobs: []hubmesh.Descriptor{{Digest: layer.Digest, Size: 999}}, Node: "n1"}, hubmesh.ErrSizeInvalid, ""},
		{"link size conflict in batch", &LinkBlobs{Repo: "bob/app", Blobs: []hubmesh.Descriptor{other, {Digest: other.Digest, Size: 1}}, Node: "n1"}, hubmesh.ErrSizeInvalid, ""},
		{"link with too long node", &LinkBlobs{Repo: "bob/app", Blobs: []hubmesh.Descriptor{other}, Node: strings.Repeat("n", maxNodeLen+1)}, hubmesh.ErrInvalid, ""},
		{"link nothing", &LinkBlobs{Repo: "bob/app", Node: "n1"}, hubmesh.ErrInvalid, ""},
		{"link bad digest", &LinkBlobs{Repo: "bob/app", Blobs: []hubmesh.Descriptor{{Digest: "sha256:zz"}}, Node: "n1"}, hubmesh.ErrInvalid, ""},
		{"mount from repo without link", &MountBlob{Repo: "bob/app", From: "carol/app", Digest: layer.Digest, Node: "n2"}, hubmesh.ErrBlobUnknown, ""},
		{"anonymous mount of unknown blob", &MountBlob{Repo: "bob/app", Digest: other.Digest, Node: "n2"}, hubmesh.ErrBlobUnknown, ""},
		{"unlink unknown", &UnlinkBlob{Repo: "bob/app", Digest: layer.Digest}, hubmesh.ErrBlobUnknown, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFSM(t)
			h.mustApply(&LinkBlobs{Repo: "alice/app", Blobs: []hubmesh.Descriptor{layer}, Node: "n1"})
			h.mustApply(&PutManifest{Manifest: *good, Tags: []string{"1.0"}})
			before := h.dump()

			err := h.applyErr(tc.cmd)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("error %q does not mention %q", err, tc.message)
			}
			after := h.dump()
			if got := readU64([]byte(after[string(keyApplied)])); got != h.index {
				t.Fatalf("applied index %d, want %d", got, h.index)
			}
			delete(before, string(keyApplied))
			delete(after, string(keyApplied))
			if !maps.Equal(before, after) {
				t.Fatal("a rejected command changed the state")
			}
		})
	}
}

func TestFSMTagMovesAndDeleteManifest(t *testing.T) {
	h := newFSM(t)
	a := imageManifest("alice/app", "a")
	b := imageManifest("alice/app", "b")
	h.mustApply(&PutManifest{Manifest: *a, Tags: []string{"latest", "stable", "a"}})
	h.mustApply(&PutManifest{Manifest: *b, Tags: []string{"latest", "b"}})

	if got, _ := h.f.getManifest("alice/app", "latest"); got == nil || got.Digest != b.Digest {
		t.Fatalf("latest = %v, want %s", got, b.Digest)
	}
	// Deleting a removes only the tags still pointing at it.
	h.mustApply(&DeleteManifest{Repo: "alice/app", Digest: a.Digest})
	if _, err := h.f.getManifest("alice/app", a.Digest.String()); !errors.Is(err, hubmesh.ErrManifestUnknown) {
		t.Fatalf("deleted manifest: %v", err)
	}
	tags, _ := h.f.tags("alice/app", hubmesh.Page{})
	if strings.Join(tags, ",") != "b,latest" {
		t.Fatalf("tags after delete = %q, want b,latest", tags)
	}
	if err := h.applyErr(&DeleteManifest{Repo: "alice/app", Digest: a.Digest}); !errors.Is(err, hubmesh.ErrManifestUnknown) {
		t.Fatalf("second delete: %v", err)
	}

	h.mustApply(&DeleteTag{Repo: "alice/app", Tag: "latest"})
	if _, err := h.f.getManifest("alice/app", "latest"); !errors.Is(err, hubmesh.ErrManifestUnknown) {
		t.Fatalf("deleted tag: %v", err)
	}
	if _, err := h.f.getManifest("alice/app", b.Digest.String()); err != nil {
		t.Fatalf("manifest after tag delete: %v", err)
	}
	// Deleting b must not resurrect or leave the deleted tag behind.
	h.mustApply(&DeleteManifest{Repo: "alice/app", Digest: b.Digest})
	tags, err := h.f.tags("alice/app", hubmesh.Page{})
	if err != nil || len(tags) != 0 {
		t.Fatalf("tags = %q, %v; want none (the repository stays)", tags, err)
	}
	for k := range h.dump() {
		if strings.HasPrefix(k, string(prefixTagRev)) || strings.HasPrefix(k, string(prefixTag)) {
			t.Fatalf("leftover key %q", k)
		}
	}
	if _, mf, _, _ := h.f.counts(); mf != 0 {
		t.Fatalf("manifest count %d, want 0", mf)
	}
}

func TestFSMReferrers(t *testing.T) {
	h := newFSM(t)
	subject := imageManifest("alice/app", "subject")
	h.mustApply(&PutManifest{Manifest: *subject, Tags: []string{"1.0"}})
	var refs []*hubmesh.Manifest
	for i, at := range []string{"application/sbom", "application/sig", "application/sbom"} {
		r := imageManifest("alice/app", fmt.Sprintf("ref%d", i))
		r.ArtifactType = at
		r.Subject = subject.Digest
		r.Annotations = map[string]string{"i": fmt.Sprint(i)}
		refs = append(refs, r)
		h.mustApply(&PutManifest{Manifest: *r})
	}
	// A referrer may be pushed before its subject; it lives in another repo here.
	other := imageManifest("bob/app", "ref-other")
	other.Subject = subject.Digest
	h.mustApply(&PutManifest{Manifest: *other})

	all, err := h.f.referrers("alice/app", subject.Digest, "")
	if err != nil || len(all) != 3 {
		t.Fatalf("referrers = %v, %v; want 3", all, err)
	}
	for i := 1; i < len(all); i++ {
		if all[i-1].Digest >= all[i].Digest {
			t.Fatalf("referrers not ordered by digest: %v", all)
		}
	}
	sboms, _ := h.f.referrers("alice/app", subject.Digest, "application/sbom")
	if len(sboms) != 2 {
		t.Fatalf("sbom referrers = %v, want 2", sboms)
	}
	want := refs[1].Descriptor()
	sigs, _ := h.f.referrers("alice/app", subject.Digest, "application/sig")
	if len(sigs) != 1 || sigs[0].Digest != want.Digest || sigs[0].Size != want.Size ||
		sigs[0].MediaType != want.MediaType || sigs[0].Annotations["i"] != "1" {
		t.Fatalf("sig referrers = %+v, want [%+v]", sigs, want)
	}

	h.mustApply(&DeleteManifest{Repo: "alice/app", Digest: refs[1].Digest})
	if got, _ := h.f.referrers("alice/app", subject.Digest, ""); len(got) != 2 {
		t.Fatalf("referrers after delete = %v, want 2", got)
	}
	if got, err := h.f.referrers("nobody/app", subject.Digest, ""); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("referrers of unknown repo = %#v, %v; want empty", got, err)
	}
}

// TestFSMLinkBlobsWithoutHolder covers the pull-through cache: blobs are
// linked before any node holds them (no replica), the manifest that needs
// them is accepted, and AddReplica records the holder once the content
// arrives. A link without a holder never drops a holder already recorded.
func TestFSMLinkBlobsWithoutHolder(t *testing.T) {
	h := newFSM(t)
	h.mustApply(&SetMember{Member: Member{ID: "n1", HTTP: "http://n1:5000", Role: RoleVoter}})
	layer, cfg := blobDesc("cached layer"), blobDesc("cached config")
	h.mustApply(&LinkBlobs{Repo: "library/alpine", Blobs: []hubmesh.Descriptor{layer, cfg, layer}})

	for _, d := range []hubmesh.Descriptor{layer, cfg} {
		if got, err := h.f.statBlob("library/alpine", d.Digest); err != nil || got.Digest != d.Digest || got.Size != d.Size {
			t.Fatalf("stat %s = %+v, %v", d.Digest, got, err)
		}
		info, err := h.f.blob(d.Digest)
		if err != nil || info.Size != d.Size || len(info.Replicas) != 0 {
			t.Fatalf("blob %s = %+v, %v; want a record with no replicas", d.Digest, info, err)
		}
	}
	if _, _, blobs, err := h.f.counts(); err != nil || blobs != 2 {
		t.Fatalf("blob count = %d, %v; want 2", blobs, err)
	}
	h.mustApply(&PutManifest{Manifest: *imageManifest("library/alpine", "v1", cfg, layer), Tags: []string{"latest"}})

	// The cache fetched the layer: n1 holds it now.
	h.mustApply(&AddReplica{Digest: layer.Digest, Size: layer.Size, Node: "n1"})
	if info, _ := h.f.blob(layer.Digest); strings.Join(info.Replicas, ",") != "n1" {
		t.Fatalf("replicas after AddReplica = %v, want n1", info.Replicas)
	}
	// Linking again without a holder (another tag of the same image)
	// keeps the holder and the count.
	h.mustApply(&LinkBlobs{Repo: "library/alpine", Blobs: []hubmesh.Descriptor{layer}})
	if info, _ := h.f.blob(layer.Digest); strings.Join(info.Replicas, ",") != "n1" {
		t.Fatalf("replicas after a holderless link = %v, want n1", info.Replicas)
	}
	if _, _, blobs, _ := h.f.counts(); blobs != 2 {
		t.Fatalf("blob count = %d, want 2", blobs)
	}
	if info, _ := h.f.blob(cfg.Digest); len(info.Replicas) != 0 {
		t.Fatalf("config replicas = %v, want none", info.Replicas)
	}
}

func TestFSMBlobs(t *testing.T) {
	h := newFSM(t)
	layer, cfg := blobDesc("layer"), blobDesc("config")
	h.mustApply(&LinkBlobs{Repo: "alice/app", Blobs: []hubmesh.Descriptor{layer, cfg, layer}, Node: "n2"})
	h.mustApply(&LinkBlobs{Repo: "alice/app", Blobs: []hubmesh.Descriptor{layer}, Node: "n1"})

	got, err := h.f.statBlob("alice/app", layer.Digest)
	if err != nil || got.Digest != layer.Digest || got.Size != layer.Size || got.MediaType != layer.MediaType {
		t.Fatalf("stat = %+v, %v", got, err)
	}
	if _, err := h.f.statBlob("bob/app", layer.Digest); !errors.Is(err, hubmesh.ErrBlobUnknown) {
		t.Fatalf("stat in unlinked repo: %v", err)
	}
	info, err := h.f.blob(layer.Digest)
	if err != nil || info.Size != layer.Size || strings.Join(info.Replicas, ",") != "n1,n2" {
		t.Fatalf("blob = %+v, %v; want replicas n1,n2", info, err)
	}

	// Mount from a named repository.
	res := h.mustApply(&MountBlob{Repo: "bob/app", From: "alice/app", Digest: layer.Digest, Node: "n3"})
	if d, ok := res.(hubmesh.Descriptor); !ok || d.Digest != layer.Digest || d.Size != layer.Size {
		t.Fatalf("mount result %#v", res)
	}
	if _, err := h.f.statBlob("bob/app", layer.Digest); err != nil {
		t.Fatalf("stat after mount: %v", err)
	}
	if info, _ := h.f.blob(layer.Digest); strings.Join(info.Replicas, ",") != "n1,n2,n3" {
		t.Fatalf("replicas after mount = %v", info.Replicas)
	}
	// Anonymous mount needs only the blob record.
	res = h.mustApply(&MountBlob{Repo: "carol/app", Digest: cfg.Digest})
	if d, ok := res.(hubmesh.Descriptor); !ok || d.Digest != cfg.Digest || d.Size != cfg.Size {
		t.Fatalf("anonymous mount result %#v", res)
	}

	h.mustApply(&UnlinkBlob{Repo: "alice/app", Digest: layer.Digest})
	if _, err := h.f.statBlob("alice/app", layer.Digest); !errors.Is(err, hubmesh.ErrBlobUnknown) {
		t.Fatalf("stat after unlink: %v", err)
	}
	if _, err := h.f.statBlob("bob/app", layer.Digest); err != nil {
		t.Fatalf("unlink in alice/app removed bob/app's link: %v", err)
	}
	if _, _, b, _ := h.f.counts(); b != 2 {
		t.Fatalf("blob count %d, want 2", b)
	}
}

func TestFSMListingPages(t *testing.T) {
	h := newFSM(t)
	m := imageManifest("alice/app", "v")
	tags := []string{"a", "b", "c", "d", "e"}
	h.mustApply(&PutManifest{Manifest: *m, Tags: tags})
	for _, repo := range []string{"alice/app", "alice/app-2", "alice", "bob/x"} {
		mm := imageManifest(repo, "v")
		h.mustApply(&PutManifest{Manifest: *mm})
	}
	for _, tc := range []struct {
		p    hubmesh.Page
		want string
	}{
		{hubmesh.Page{}, "a,b,c,d,e"},
		{hubmesh.Page{N: 2}, "a,b"},
		{hubmesh.Page{Last: "b", N: 2}, "c,d"},
		{hubmesh.Page{Last: "d"}, "e"},
		{hubmesh.Page{Last: "e"}, ""},
		{hubmesh.Page{Last: "bb"}, "c,d,e"},
	} {
		got, err := h.f.tags("alice/app", tc.p)
		if err != nil || strings.Join(got, ",") != tc.want {
			t.Errorf("tags %+v = %q, %v; want %q", tc.p, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		p    hubmesh.Page
		want string
	}{
		{hubmesh.Page{}, "alice,alice/app,alice/app-2,bob/x"},
		{hubmesh.Page{N: 1}, "alice"},
		{hubmesh.Page{Last: "alice", N: 2}, "alice/app,alice/app-2"},
		{hubmesh.Page{Last: "alice/app-2"}, "bob/x"},
	} {
		got, err := h.f.repositories(tc.p)
		if err != nil || strings.Join(got, ",") != tc.want {
			t.Errorf("repositories %+v = %q, %v; want %q", tc.p, got, err, tc.want)
		}
	}
}

// TestFSMBatchAndReplay applies a group in one ApplyBatch (a later command
// sees an earlier one's writes, a rejected one in the middle writes
// nothing), then replays the same entries after a restart: they are skipped.
func TestFSMBatchAndReplay(t *testing.T) {
	h := newFSM(t)
	layer := blobDesc("layer")
	m := imageManifest("alice/app", "v1", layer)
	entries := []*raft.Log{
		h.entry(&LinkBlobs{Repo: "alice/app", Blobs: []hubmesh.Descriptor{layer}, Node: "n1"}),
		{Index: h.index + 1, Term: 1, Type: raft.LogConfiguration, Data: []byte("not a command")},
	}
	h.index++
	entries = append(entries,
		h.entry(&DeleteTag{Repo: "alice/app", Tag: "missing"}),
		h.entry(&PutManifest{Manifest: *m, Tags: []string{"1.0"}}),
		h.entry(&DeleteTag{Repo: "alice/app", Tag: "1.0"}),
	)
	res := h.f.ApplyBatch(entries)
	if len(res) != len(entries) {
		t.Fatalf("%d responses for %d entries", len(res), len(entries))
	}
	if res[0] != nil || res[1] != nil || res[3] != nil || res[4] != nil {
		t.Fatalf("responses %v", res)
	}
	if err, _ := res[2].(error); !errors.Is(err, hubmesh.ErrManifestUnknown) {
		t.Fatalf("response 2 = %v, want ErrManifestUnknown", res[2])
	}
	if h.f.applied.Load() != h.index {
		t.Fatalf("applied %d, want %d", h.f.applied.Load(), h.index)
	}
	before := h.dump()

	h.reopen()
	if h.f.applied.Load() != h.index {
		t.Fatalf("applied after reopen %d, want %d", h.f.applied.Load(), h.index)
	}
	// Replaying would fail DeleteTag (tag gone) and bump counters; skipped
	// entries return nil and change nothing.
	res = h.f.ApplyBatch(entries)
	for i, r := range res {
		if r != nil {
			t.Fatalf("replayed entry %d returned %v", i, r)
		}
	}
	if !maps.Equal(before, h.dump()) {
		t.Fatal("replay changed the state")
	}
	// A group straddling the applied index applies only the new part.
	next := h.entry(&PutManifest{Manifest: *m, Tags: []string{"again"}})
	res = h.f.ApplyBatch(append(entries[3:], next))
	if res[0] != nil || res[1] != nil || res[2] != nil {
		t.Fatalf("responses %v", res)
	}
	if got, err := h.f.getManifest("alice/app", "again"); err != nil || got.Digest != m.Digest {
		t.Fatalf("new entry not applied: %v", err)
	}
	if _, err := h.f.getManifest("alice/app", "1.0"); !errors.Is(err, hubmesh.ErrManifestUnknown) {
		t.Fatalf("replayed entry re-applied: %v", err)
	}
}

func TestFSMDecodeFailurePanics(t *testing.T) {
	valid, err := Encode(&DeleteTag{Repo: "a", Tag: "b"})
	if err != nil {
		t.Fatal(err)
	}
	unknownVersion := append([]byte{9}, valid[1:]...)
	unknownType := append([]byte{envelopeVersion, 0xff, 0xfe}, valid[3:]...)
	badJSON := append(append([]byte(nil), valid[:3]...), "{not json"...)
	for name, data := range map[string][]byte{
		"empty":           nil,
		"short":           {envelopeVersion, 0},
		"unknown version": unknownVersion,
		"unknown type":    unknownType,
		"bad payload":     badJSON,
	} {
		t.Run(name, func(t *testing.T) {
			h := newFSM(t)
			h.mustApply(&LinkBlobs{Repo: "a", Blobs: []hubmesh.Descriptor{blobDesc("x")}, Node: "n"})
			h.mustHalt(data)
		})
	}
}

func TestFSMBlobsListing(t *testing.T) {
	h := newFSM(t)
	var descs []hubmesh.Descriptor
	for _, c := range []string{"a", "b", "c", "d", "e"} {
		descs = append(descs, blobDesc(c))
	}
	h.mustApply(&LinkBlobs{Repo: "alice/app", Blobs: descs, Node: "n1"})
	var got []BlobInfo
	p := hubmesh.Page{N: 2}
	for {
		page, err := h.f.blobs(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 2 {
			t.Fatalf("page of %d records, asked for 2", len(page))
		}
		got = append(got, page...)
		p.Last = page[len(page)-1].Digest.String()
	}
	if len(got) != len(descs) {
		t.Fatalf("listed %d blobs, want %d", len(got), len(descs))
	}
	for i, b := range got {
		if i > 0 && got[i-1].Digest >= b.Digest {
			t.Errorf("not in digest order: %s then %s", got[i-1].Digest, b.Digest)
		}
		if len(b.Replicas) != 1 || b.Replicas[0] != "n1" || b.Size != int64(len("a")) {
			t.Errorf("record %+v", b)
		}
	}
}
