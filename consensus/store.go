package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// The methods below have exactly the signatures of registryapi.Manifests,
// registryapi.Listings and registryapi.BlobLinks. Reads are served from the
// local FSM; writes are commands proposed through Apply (and forwarded to
// the leader from a follower). A follower that misses locally — an unknown
// manifest, tag, repository, blob link or blob record, or no referrers —
// waits for a read barrier (Config.ReadBarrierTimeout) and reads again, so
// that a write acknowledged through another node is visible on the next
// request; if the leader cannot be reached, the local answer stands.

// GetManifest resolves ref (a tag, or a digest when it contains ':') in repo.
// A missing manifest or tag is an error wrapping hubmesh.ErrManifestUnknown;
// a malformed name, tag or digest wraps hubmesh.ErrInvalid.
func (n *Node) GetManifest(ctx context.Context, repo, ref string) (*hubmesh.Manifest, error) {
	return readFresh(ctx, n, func() (*hubmesh.Manifest, error) { return n.fsm.getManifest(repo, ref) }, notFound)
}

func (f *stateMachine) getManifest(repo, ref string) (*hubmesh.Manifest, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	var d digest.Digest
	tag := ""
	if strings.Contains(ref, ":") {
		var err error
		if d, err = digest.Parse(ref); err != nil {
			return nil, fmt.Errorf("%w: digest %q: %v", hubmesh.ErrInvalid, ref, err)
		}
	} else {
		if err := checkTag(ref); err != nil {
			return nil, err
		}
		tag = ref
	}
	var m *hubmesh.Manifest
	err := f.read(func(r reader) error {
		if tag != "" {
			v, ok, err := getValue(r, tagKey(repo, tag))
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("manifest %s:%s: %w", repo, tag, hubmesh.ErrManifestUnknown)
			}
			d = digest.Digest(v)
		}
		v, ok, err := getValue(r, manifestKey(repo, d))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("manifest %s@%s: %w", repo, d, hubmesh.ErrManifestUnknown)
		}
		m, err = decodeManifest(v)
		return err
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// PutManifest stores m in m.Repo and points tags at it (one command).
func (n *Node) PutManifest(ctx context.Context, m *hubmesh.Manifest, tags []string) error {
	if m == nil {
		return fmt.Errorf("put manifest: %w: nil manifest", hubmesh.ErrInvalid)
	}
	_, err := n.Apply(ctx, &PutManifest{Manifest: *m, Tags: tags, Pusher: actorOf(ctx)})
	return err
}

// DeleteManifest removes the manifest d from repo with its tags and its
// referrers entry.
func (n *Node) DeleteManifest(ctx context.Context, repo string, d digest.Digest) error {
	_, err := n.Apply(ctx, &DeleteManifest{Repo: repo, Digest: d, At: time.Now().UTC(), Actor: actorOf(ctx)})
	return err
}

// DeleteTag removes one tag of repo.
func (n *Node) DeleteTag(ctx context.Context, repo, tag string) error {
	_, err := n.Apply(ctx, &DeleteTag{Repo: repo, Tag: tag, At: time.Now().UTC(), Actor: actorOf(ctx)})
	return err
}

// Referrers lists the manifests in repo whose subject is d, ordered by
// digest, keeping only those of artifactType when it is not empty. An
// unknown repository or subject has no referrers.
func (n *Node) Referrers(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]hubmesh.Descriptor, error) {
	return readFresh(ctx, n,
		func() ([]hubmesh.Descriptor, error) { return n.fsm.referrers(repo, d, artifactType) },
		func(ds []hubmesh.Descriptor, err error) bool { return err == nil && len(ds) == 0 })
}

func (f *stateMachine) referrers(repo string, d digest.Digest, artifactType string) ([]hubmesh.Descriptor, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	if err := checkDigest("subject", d); err != nil {
		return nil, err
	}
	out := []hubmesh.Descriptor{}
	err := f.read(func(r reader) error {
		return scan(r, scope(prefixReferrer, repo, d.String()), nil, 0, func(k, v []byte) error {
			var desc hubmesh.Descriptor
			if err := json.Unmarshal(v, &desc); err != nil {
				return fmt.Errorf("corrupt referrer %q: %w", k, err)
			}
			if artifactType == "" || desc.ArtifactType == artifactType {
				out = append(out, desc)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Tags lists the tags of repo in lexical order, page p of them. An unknown
// repository is an error wrapping hubmesh.ErrRepoUnknown.
func (n *Node) Tags(ctx context.Context, repo string, p hubmesh.Page) ([]string, error) {
	return readFresh(ctx, n, func() ([]string, error) { return n.fsm.tags(repo, p) }, notFound)
}

func (f *stateMachine) tags(repo string, p hubmesh.Page) ([]string, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	out := []string{}
	err := f.read(func(r reader) error {
		_, ok, err := getValue(r, repoKey(repo))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("repository %s: %w", repo, hubmesh.ErrRepoUnknown)
		}
		pre := scope(prefixTag, repo)
		var from []byte
		if p.Last != "" {
			from = after(append(pre[:len(pre):len(pre)], p.Last...))
		}
		return scan(r, pre, from, p.N, func(k, _ []byte) error {
			out = append(out, string(k[len(pre):]))
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Repositories lists every repository name in lexical order, page p of them.
func (n *Node) Repositories(ctx context.Context, p hubmesh.Page) ([]string, error) {
	return n.fsm.repositories(p)
}

func (f *stateMachine) repositories(p hubmesh.Page) ([]string, error) {
	out := []string{}
	err := f.read(func(r reader) error {
		var from []byte
		if p.Last != "" {
			from = after(repoKey(p.Last))
		}
		return scan(r, prefixRepo, from, p.N, func(k, _ []byte) error {
			out = append(out, string(k[len(prefixRepo):]))
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// StatBlob returns the descriptor of d if it is linked in repo, else an
// error wrapping hubmesh.ErrBlobUnknown.
func (n *Node) StatBlob(ctx context.Context, repo string, d digest.Digest) (hubmesh.Descriptor, error) {
	return readFresh(ctx, n, func() (hubmesh.Descriptor, error) { return n.fsm.statBlob(repo, d) }, notFound)
}

func (f *stateMachine) statBlob(repo string, d digest.Digest) (hubmesh.Descriptor, error) {
	if err := checkRepo(repo); err != nil {
		return hubmesh.Descriptor{}, err
	}
	if err := checkDigest("blob", d); err != nil {
		return hubmesh.Descriptor{}, err
	}
	var desc hubmesh.Descriptor
	err := f.read(func(r reader) error {
		v, ok, err := getValue(r, linkKey(repo, d))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("blob %s in %s: %w", d, repo, hubmesh.ErrBlobUnknown)
		}
		if err := json.Unmarshal(v, &desc); err != nil {
			return fmt.Errorf("corrupt link of %s in %s: %w", d, repo, err)
		}
		return nil
	})
	return desc, err
}

// LinkBlob links content this node has just committed to its store into
// repo and records this node as a replica of it.
func (n *Node) LinkBlob(ctx context.Context, repo string, desc hubmesh.Descriptor) error {
	return n.LinkBlobs(ctx, repo, []hubmesh.Descriptor{desc})
}

// LinkBlobs is LinkBlob for several blobs in one command.
func (n *Node) LinkBlobs(ctx context.Context, repo string, descs []hubmesh.Descriptor) error {
	_, err := n.Apply(ctx, &LinkBlobs{Repo: repo, Blobs: descs, Node: n.cfg.NodeID})
	return err
}

// LinkUnheldBlobs links blobs whose content no node holds yet into repo,
// recording no replica: a pull-through cache links the blobs of a manifest
// before it fetches them, and records each holder with AddReplica once the
// content is stored, so that no member asks a node for content it lacks.
func (n *Node) LinkUnheldBlobs(ctx context.Context, repo string, descs []hubmesh.Descriptor) error {
	_, err := n.Apply(ctx, &LinkBlobs{Repo: repo, Blobs: descs})
	return err
}

// MountBlob links d into repo from repository from, or from any repository
// holding it when from is empty, and returns the linked descriptor. It
// records this node as a replica only when Config.Local reports that the
// content is in this node's store: a mount moves no content. Nothing to
// mount is an error wrapping hubmesh.ErrBlobUnknown.
func (n *Node) MountBlob(ctx context.Context, repo, from string, d digest.Digest) (hubmesh.Descriptor, error) {
	node := ""
	if n.cfg.Local != nil && d.Validate() == nil && n.cfg.Local(d) {
		node = n.cfg.NodeID
	}
	res, err := n.Apply(ctx, &MountBlob{Repo: repo, From: from, Digest: d, Node: node})
	if err != nil {
		return hubmesh.Descriptor{}, err
	}
	desc, ok := res.(hubmesh.Descriptor)
	if !ok {
		return hubmesh.Descriptor{}, fmt.Errorf("mount blob %s: %w: unexpected result %T", d, hubmesh.ErrUnavailable, res)
	}
	return desc, nil
}

// UnlinkBlob removes d's link from repo; unknown links wrap
// hubmesh.ErrBlobUnknown.
func (n *Node) UnlinkBlob(ctx context.Context, repo string, d digest.Digest) error {
	_, err := n.Apply(ctx, &UnlinkBlob{Repo: repo, Digest: d})
	return err
}

// BlobInfo is the cluster-wide record of a blob's content.
type BlobInfo struct {
	Digest digest.Digest
	Size   int64
	// Replicas are the IDs of the nodes that stored the content, sorted.
	Replicas []string
}

// Blob returns the record of d, or an error wrapping hubmesh.ErrBlobUnknown
// when no node has recorded it.
func (n *Node) Blob(ctx context.Context, d digest.Digest) (BlobInfo, error) {
	return readFresh(ctx, n, func() (BlobInfo, error) { return n.fsm.blob(d) }, notFound)
}

// AddReplica records this node, or another member, as holding the content
// of the recorded blob d of the given size. See the AddReplica command.
func (n *Node) AddReplica(ctx context.Context, d digest.Digest, size int64, node string) error {
	_, err := n.Apply(ctx, &AddReplica{Digest: d, Size: size, Node: node})
	return err
}

func (f *stateMachine) blob(d digest.Digest) (BlobInfo, error) {
	if err := checkDigest("blob", d); err != nil {
		return BlobInfo{}, err
	}
	var rec blobRecord
	err := f.read(func(r reader) error {
		v, ok, err := getValue(r, blobKey(d))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("blob %s: %w", d, hubmesh.ErrBlobUnknown)
		}
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("corrupt blob record of %s: %w", d, err)
		}
		return nil
	})
	if err != nil {
		return BlobInfo{}, err
	}
	return rec.info(d), nil
}

// info is the BlobInfo of the record of d.
func (rec blobRecord) info(d digest.Digest) BlobInfo {
	return BlobInfo{Digest: d, Size: rec.Size, Replicas: rec.Replicas}
}

// Blobs lists blob records in digest order: at most p.N records strictly
// after the digest p.Last. The repair worker walks it page by page.
func (n *Node) Blobs(ctx context.Context, p hubmesh.Page) ([]BlobInfo, error) {
	return n.fsm.blobs(p)
}

func (f *stateMachine) blobs(p hubmesh.Page) ([]BlobInfo, error) {
	out := []BlobInfo{}
	err := f.read(func(r reader) error {
		var from []byte
		if p.Last != "" {
			from = after(blobKey(digest.Digest(p.Last)))
		}
		return scan(r, prefixBlob, from, p.N, func(k, v []byte) error {
			var rec blobRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("corrupt blob record %q: %w", k, err)
			}
			out = append(out, rec.info(digest.Digest(k[len(prefixBlob):])))
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
