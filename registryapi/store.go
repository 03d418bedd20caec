package registryapi

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// Manifests is the replicated manifest metadata of the cluster. The
// consensus package implements it; reads are local, writes go through Raft.
type Manifests interface {
	// GetManifest resolves ref (a tag or a digest) in repo. It returns an
	// error wrapping hubmesh.ErrManifestUnknown (or ErrRepoUnknown).
	GetManifest(ctx context.Context, repo, ref string) (*hubmesh.Manifest, error)
	// PutManifest stores m in m.Repo (creating the repository) and points
	// each of tags at it, atomically. It fails with ErrManifestBlobUnknown
	// when a blob in m.Blobs is not linked in the repository, and with
	// ErrManifestUnknown when a child in m.Children is not in it.
	PutManifest(ctx context.Context, m *hubmesh.Manifest, tags []string) error
	// DeleteManifest removes the manifest, every tag pointing at it and its
	// referrers entry.
	DeleteManifest(ctx context.Context, repo string, d digest.Digest) error
	// DeleteTag removes one tag; the manifest stays.
	DeleteTag(ctx context.Context, repo, tag string) error
	// Referrers lists the manifests in repo whose subject is d, filtered by
	// artifactType when it is not empty, ordered by digest.
	Referrers(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]hubmesh.Descriptor, error)
}

// Listings are the lexically ordered listings of tags and repositories.
type Listings interface {
	// Tags lists the tags of repo; ErrRepoUnknown if it does not exist.
	Tags(ctx context.Context, repo string, p hubmesh.Page) ([]string, error)
	// Repositories lists every repository name.
	Repositories(ctx context.Context, p hubmesh.Page) ([]string, error)
}

// BlobLinks records which blobs are reachable in which repository. A blob
// is served from a repository only if it was pushed or mounted there.
type BlobLinks interface {
	// StatBlob returns the descriptor of d if it is linked in repo, else an
	// error wrapping hubmesh.ErrBlobUnknown.
	StatBlob(ctx context.Context, repo string, d digest.Digest) (hubmesh.Descriptor, error)
	// LinkBlob links content that the local store has just committed.
	LinkBlob(ctx context.Context, repo string, desc hubmesh.Descriptor) error
	// MountBlob links d into repo from repository from, or from any
	// repository that holds it when from is empty (anonymous mount). It
	// returns ErrBlobUnknown when there is nothing to mount.
	MountBlob(ctx context.Context, repo, from string, d digest.Digest) (hubmesh.Descriptor, error)
	// UnlinkBlob removes the link; the content may stay for other repos.
	UnlinkBlob(ctx context.Context, repo string, d digest.Digest) error
}

// Blobs is the content-addressed blob content this node can serve.
type Blobs interface {
	// Open returns the verified content of d and its size. On a local hit
	// the reader is an *os.File, so net/http serves it with sendfile.
	Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, int64, error)
	// Stat reports the size of d if this node can serve it.
	Stat(ctx context.Context, d digest.Digest) (int64, error)
}

// Uploads holds blob upload sessions. Sessions are local to the node that
// created them and do not survive a restart (ErrUploadUnknown afterwards).
type Uploads interface {
	// Create starts a session for repo. alg is the digest algorithm the
	// client announced (digest.SHA256 when it announced none).
	Create(ctx context.Context, repo string, alg digest.Algorithm) (Upload, error)
	// Get finds a session of repo by id, or fails with ErrUploadUnknown.
	Get(ctx context.Context, repo, id string) (Upload, error)
}

// Upload is one blob upload session. Its methods are safe for concurrent
// use; appends are serialised.
type Upload interface {
	ID() string
	// Size is the number of bytes received so far.
	Size() int64
	// Append writes r at offset, which must equal Size() (else
	// ErrRangeInvalid), and returns the new size. A failed append leaves the
	// session at its previous size.
	Append(ctx context.Context, offset int64, r io.Reader) (int64, error)
	// Commit verifies that the content has digest d (ErrDigestMismatch
	// otherwise, and the session stays usable), moves it into the blob store
	// (fsynced) and ends the session.
	Commit(ctx context.Context, d digest.Digest) (hubmesh.Descriptor, error)
	// Cancel ends the session and deletes what it received.
	Cancel(ctx context.Context) error
}
