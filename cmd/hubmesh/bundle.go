package main

// A bundle is an OCI image layout (image-spec image-layout.md) in one
// uncompressed tar archive, as `hubmesh export` writes it and `hubmesh
// import` reads it:
//
//	oci-layout                {"imageLayoutVersion":"1.0.0"}
//	blobs/sha256/<hex>        every layer, config and manifest, once
//	blobs/sha512/<hex>        (when content uses sha512)
//	index.json                one descriptor per exported reference
//
// Each descriptor of index.json points at the top manifest (an image
// manifest or an index) of one reference and carries the annotations
// org.opencontainers.image.ref.name = "REPO:TAG" (or "REPO@DIGEST" for a
// reference by digest) and io.hubmesh.repository = "REPO". Blobs come
// before index.json, so an export streams; an import indexes the archive
// once and then reads entries at their offsets.

import (
	"archive/tar"
	_ "crypto/sha256" // the hashes go-digest uses
	_ "crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	// annotationRepository names the repository of an index.json entry.
	annotationRepository = "io.hubmesh.repository"
	// maxManifestSize bounds a manifest, as the node does.
	maxManifestSize = 4 << 20
	// maxIndexSize bounds index.json and oci-layout.
	maxIndexSize = 64 << 20
)

// errBadBundle marks a bundle that is not a valid OCI image layout tar or
// whose content does not match its digests.
var errBadBundle = errors.New("bad bundle")

// blobPath is the layout path of the blob with digest d.
func blobPath(d digest.Digest) string {
	return path.Join(ocispec.ImageBlobsDir, string(d.Algorithm()), d.Encoded())
}

// isIndexType tells an image index (or Docker manifest list) media type.
func isIndexType(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == mediaTypeDockerList
}

// nonDistributable tells layers that registries do not hold (their
// descriptors name URLs elsewhere); the node skips them too.
func nonDistributable(mt string) bool {
	return strings.Contains(mt, ".nondistributable.") ||
		mt == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" ||
		mt == "application/vnd.docker.image.rootfs.foreign.diff.tar"
}

// parsedManifest is what a bundle needs of a manifest: its children (for
// an index) or its blobs (config and layers).
type parsedManifest struct {
	MediaType string
	Children  []ocispec.Descriptor
	Blobs     []ocispec.Descriptor
}

// manifestMediaType is the media type of manifest b: its mediaType field,
// else the Content-Type it came with, else what its fields say.
func manifestMediaType(b []byte, contentType string) string {
	var m struct {
		MediaType string          `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
	}
	_ = json.Unmarshal(b, &m)
	if m.MediaType != "" {
		return m.MediaType
	}
	if ct, _, _ := strings.Cut(contentType, ";"); strings.TrimSpace(ct) != "" && !strings.HasPrefix(ct, "application/json") {
		return strings.TrimSpace(ct)
	}
	if m.Manifests != nil {
		return ocispec.MediaTypeImageIndex
	}
	return ocispec.MediaTypeImageManifest
}

// parseManifest reads the descriptors of manifest b with media type mt.
func parseManifest(b []byte, mt string) (parsedManifest, error) {
	var m struct {
		Config    *ocispec.Descriptor  `json:"config"`
		Layers    []ocispec.Descriptor `json:"layers"`
		Manifests []ocispec.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return parsedManifest{}, fmt.Errorf("malformed manifest: %w", err)
	}
	p := parsedManifest{MediaType: mt}
	check := func(field string, d ocispec.Descriptor) error {
		if err := d.Digest.Validate(); err != nil {
			return fmt.Errorf("%s: bad digest %q", field, d.Digest)
		}
		if d.Size < 0 {
			return fmt.Errorf("%s: negative size", field)
		}
		return nil
	}
	if isIndexType(mt) {
		for i, c := range m.Manifests {
			if err := check(fmt.Sprintf("manifests[%d]", i), c); err != nil {
				return p, err
			}
			p.Children = append(p.Children, c)
		}
		return p, nil
	}
	if m.Config == nil {
		return p, fmt.Errorf("manifest of type %q has no config", mt)
	}
	if err := check("config", *m.Config); err != nil {
		return p, err
	}
	p.Blobs = append(p.Blobs, *m.Config)
	for i, l := range m.Layers {
		if err := check(fmt.Sprintf("layers[%d]", i), l); err != nil {
			return p, err
		}
		if !nonDistributable(l.MediaType) {
			p.Blobs = append(p.Blobs, l)
		}
	}
	return p, nil
}

// refName is the ref.name annotation of an entry: REPO:TAG or REPO@DIGEST.
func refName(repo, tag string, d digest.Digest) string {
	if tag == "" {
		return repo + "@" + d.String()
	}
	return repo + ":" + tag
}

// splitRefName reads a ref.name annotation back: REPO:TAG, REPO@DIGEST, or
// a bare TAG (as other tools write it), which takes defaultRepo.
func splitRefName(name, defaultRepo string) (repo, tag string) {
	if r, _, ok := strings.Cut(name, "@"); ok {
		return r, ""
	}
	slash := strings.LastIndex(name, "/")
	if i := strings.LastIndex(name, ":"); i > slash {
		return name[:i], name[i+1:]
	}
	if slash < 0 && defaultRepo != "" {
		return defaultRepo, name
	}
	return name, ""
}

// bundleWriter writes a bundle to w. Blobs go in as they come; finish
// writes index.json.
type bundleWriter struct {
	tw      *tar.Writer
	written map[digest.Digest]bool
	index   ocispec.Index
}

func newBundleWriter(w io.Writer) (*bundleWriter, error) {
	bw := &bundleWriter{tw: tar.NewWriter(w), written: map[digest.Digest]bool{},
		index: ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return nil, err
	}
	if err := bw.file(ocispec.ImageLayoutFile, int64(len(layout)), strings.NewReader(string(layout))); err != nil {
		return nil, err
	}
	return bw, nil
}

func (bw *bundleWriter) file(name string, size int64, r io.Reader) error {
	hdr := &tar.Header{Name: name, Mode: 0o644, Size: size, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
	if err := bw.tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.Copy(bw.tw, r)
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("%s: %d bytes, want %d", name, n, size)
	}
	return nil
}

// has tells whether blob d is in the bundle already.
func (bw *bundleWriter) has(d digest.Digest) bool { return bw.written[d] }

// blob adds blob desc with content r, and fails unless r holds exactly
// desc.Size bytes with digest desc.Digest.
func (bw *bundleWriter) blob(desc ocispec.Descriptor, r io.Reader) error {
	if bw.written[desc.Digest] {
		return nil
	}
	v := desc.Digest.Verifier()
	lr := &io.LimitedReader{R: io.TeeReader(r, v), N: desc.Size}
	if err := bw.file(blobPath(desc.Digest), desc.Size, lr); err != nil {
		return fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	var one [1]byte
	if n, _ := r.Read(one[:]); n > 0 {
		return fmt.Errorf("blob %s: more than its %d bytes", desc.Digest, desc.Size)
	}
	if !v.Verified() {
		return fmt.Errorf("blob %s: content does not match its digest", desc.Digest)
	}
	bw.written[desc.Digest] = true
	return nil
}

// ref adds an entry to index.json: repo's manifest desc under tag (or by
// digest when tag is empty).
func (bw *bundleWriter) ref(repo, tag string, desc ocispec.Descriptor) {
	desc.Annotations = map[string]string{
		ocispec.AnnotationRefName: refName(repo, tag, desc.Digest),
		annotationRepository:      repo,
	}
	desc.URLs, desc.Platform = nil, nil
	bw.index.Manifests = append(bw.index.Manifests, desc)
}

// finish writes index.json and ends the archive.
func (bw *bundleWriter) finish() error {
	b, err := json.Marshal(bw.index)
	if err != nil {
		return err
	}
	if err := bw.file(ocispec.ImageIndexFile, int64(len(b)), strings.NewReader(string(b))); err != nil {
		return err
	}
	return bw.tw.Close()
}

// bundle is an open bundle file: the offset and size of each regular file.
type bundle struct {
	name    string
	f       *os.File
	entries map[string]entry
	layout  ocispec.ImageLayout
	index   ocispec.Index
}

type entry struct{ off, size int64 }

// openBundle opens and indexes the bundle at name, and reads its
// oci-layout and index.json. Errors wrap errBadBundle when the file is
// not a valid bundle.
func openBundle(name string) (*bundle, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	b := &bundle{name: name, f: f, entries: map[string]entry{}}
	if err := b.scan(); err != nil {
		f.Close()
		return nil, err
	}
	return b, nil
}

func (b *bundle) Close() error { return b.f.Close() }

func (b *bundle) bad(format string, args ...any) error {
	return fmt.Errorf("%s: %w: %s", b.name, errBadBundle, fmt.Sprintf(format, args...))
}

func (b *bundle) scan() error {
	tr := tar.NewReader(b.f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return b.bad("not a complete tar archive: %v", err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		off, err := b.f.Seek(0, io.SeekCurrent)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		b.entries[name] = entry{off: off, size: hdr.Size}
	}
	// the archive must hold every entry's data in full
	if st, err := b.f.Stat(); err == nil {
		for name, e := range b.entries {
			if e.off+e.size > st.Size() {
				return b.bad("%s is truncated", name)
			}
		}
	}
	layout, err := b.small(ocispec.ImageLayoutFile)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(layout, &b.layout); err != nil || b.layout.Version == "" {
		return b.bad("oci-layout is not an image layout file")
	}
	if maj, _, _ := strings.Cut(b.layout.Version, "."); maj != "1" {
		return b.bad("image layout version %q is not supported (want 1.x)", b.layout.Version)
	}
	idx, err := b.small(ocispec.ImageIndexFile)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(idx, &b.index); err != nil {
		return b.bad("index.json: %v", err)
	}
	return nil
}

// small reads a small file of the layout in full.
func (b *bundle) small(name string) ([]byte, error) {
	e, ok := b.entries[name]
	if !ok {
		return nil, b.bad("no %s: not an OCI image layout", name)
	}
	if e.size > maxIndexSize {
		return nil, b.bad("%s is larger than %d bytes", name, maxIndexSize)
	}
	buf := make([]byte, e.size)
	if _, err := b.f.ReadAt(buf, e.off); err != nil {
		return nil, b.bad("read %s: %v", name, err)
	}
	return buf, nil
}

// open returns a reader of blob desc, checking that the bundle holds it
// with desc's size. It does not verify the digest; verify does.
func (b *bundle) open(desc ocispec.Descriptor) (*io.SectionReader, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, b.bad("bad digest %q", desc.Digest)
	}
	e, ok := b.entries[blobPath(desc.Digest)]
	if !ok {
		return nil, b.bad("blob %s is missing", desc.Digest)
	}
	if e.size != desc.Size {
		return nil, b.bad("blob %s has %d bytes, its descriptor says %d", desc.Digest, e.size, desc.Size)
	}
	return io.NewSectionReader(b.f, e.off, e.size), nil
}

// verify reads blob desc in full and checks its digest; each chunk read
// is reported to progress.
func (b *bundle) verify(desc ocispec.Descriptor, progress func(int64)) error {
	r, err := b.open(desc)
	if err != nil {
		return err
	}
	v := desc.Digest.Verifier()
	if _, err := io.Copy(v, &countingReader{r: r, add: progress}); err != nil {
		return b.bad("read blob %s: %v", desc.Digest, err)
	}
	if !v.Verified() {
		return b.bad("blob %s is corrupt: its content does not match its digest", desc.Digest)
	}
	return nil
}

// readManifest reads and verifies the manifest desc.
func (b *bundle) readManifest(desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size > maxManifestSize {
		return nil, b.bad("manifest %s is larger than %d bytes", desc.Digest, maxManifestSize)
	}
	r, err := b.open(desc)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, desc.Size)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, b.bad("read manifest %s: %v", desc.Digest, err)
	}
	if got := desc.Digest.Algorithm().FromBytes(buf); got != desc.Digest {
		return nil, b.bad("manifest %s is corrupt: its content has digest %s", desc.Digest, got)
	}
	return buf, nil
}

// countingReader reports the bytes read through it.
type countingReader struct {
	r   io.Reader
	add func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 && c.add != nil {
		c.add(int64(n))
	}
	return n, err
}
