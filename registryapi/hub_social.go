package registryapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// Social is the replicated social state of repositories: stars, the
// official flag and pull times; *consensus.Node implements it.
type Social interface {
	// Star records that user starred repo (idempotent); an unknown user
	// or repository wraps ErrNotFound.
	Star(ctx context.Context, user, repo string, at time.Time) error
	// Unstar removes the star (idempotent).
	Unstar(ctx context.Context, user, repo string) error
	// Starred lists the repositories user starred, in name order.
	Starred(ctx context.Context, user string, p hubmesh.Page) ([]string, error)
	// SetOfficial flags repository repo, or namespace ns, official (or not).
	SetOfficial(ctx context.Context, repo, ns string, official bool) error
	// PullTimes returns the last pull time of each tag and digest of repo.
	PullTimes(ctx context.Context, repo string) (map[string]time.Time, error)
}

// PullStats receives every manifest pull (GET, not HEAD) the /v2 handler
// serves. It must return at once: the node counts in memory and flushes
// in batches.
type PullStats interface {
	Pulled(repo, ref string, at time.Time)
}

func (h *Hub) needSocial() error {
	if h.social == nil {
		return newError(codeUnavailable, "stars are not available on this node")
	}
	return nil
}

// star serves PUT /api/v1/repositories/{ns}/{name}/stars: the caller
// stars a repository they can see.
func (h *Hub) star(w http.ResponseWriter, r *http.Request, id identity) error {
	return h.setStar(w, r, id, true)
}

// unstar serves DELETE /api/v1/repositories/{ns}/{name}/stars.
func (h *Hub) unstar(w http.ResponseWriter, r *http.Request, id identity) error {
	return h.setStar(w, r, id, false)
}

func (h *Hub) setStar(w http.ResponseWriter, r *http.Request, id identity, on bool) error {
	if err := h.needSocial(); err != nil {
		return err
	}
	name, err := repoName(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	if _, _, err := h.repository(ctx, id, name); err != nil {
		return err
	}
	if on {
		err = h.social.Star(ctx, id.user, name, h.auth.now().UTC())
	} else {
		err = h.social.Unstar(ctx, id.user, name)
	}
	if errors.Is(err, hubmesh.ErrNotFound) {
		return repoUnknown(name)
	}
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listStarred serves GET /api/v1/users/{name}/starred: the repositories a
// user starred that the caller may see, paged by name (page_size, last).
func (h *Hub) listStarred(w http.ResponseWriter, r *http.Request, id identity) error {
	if err := h.needSocial(); err != nil {
		return err
	}
	ctx := r.Context()
	p, err := pageRequest(r)
	if err != nil {
		return err
	}
	user := r.PathValue("name")
	if _, err := h.accounts.User(ctx, user); err != nil {
		if errors.Is(err, hubmesh.ErrNotFound) || errors.Is(err, hubmesh.ErrInvalid) {
			return notFound("user %q not found", truncate(user, 60))
		}
		return err
	}
	const batch = 256
	var out []repoView
	last, lastKey, more := p.Last, "", false
scan:
	for {
		names, err := h.social.Starred(ctx, user, hubmesh.Page{Last: last, N: batch})
		if err != nil {
			return err
		}
		for _, name := range names {
			repo, _, err := h.repository(ctx, id, name)
			if hiddenOrGone(err) {
				continue // invisible to the caller, or deleted meanwhile
			}
			if err != nil {
				return err
			}
			if len(out) == p.N {
				more = true
				break scan
			}
			out = append(out, viewRepo(repo))
			lastKey = name
		}
		if len(names) < batch {
			break
		}
		last = names[len(names)-1]
	}
	return writePage(w, r, p, out, more, lastKey)
}

// hiddenOrGone reports whether err is an answer of "no such thing".
func hiddenOrGone(err error) bool {
	var ae *apiError
	if errors.As(err, &ae) && (ae.code == codeNameUnknown || ae.code == codeNotFound) {
		return true
	}
	return errors.Is(err, hubmesh.ErrNotFound)
}

// setRepoOfficial serves PUT and DELETE
// /api/v1/repositories/{ns}/{name}/official (site administrators).
func (h *Hub) setRepoOfficial(w http.ResponseWriter, r *http.Request, id identity) error {
	if err := h.needSocial(); err != nil {
		return err
	}
	name, err := repoName(r)
	if err != nil {
		return err
	}
	on := r.Method == http.MethodPut
	if err := h.social.SetOfficial(r.Context(), name, "", on); err != nil {
		if errors.Is(err, hubmesh.ErrNotFound) {
			return repoUnknown(name)
		}
		return err
	}
	h.audit(r, id, "repo.official", name, fmt.Sprintf("is_official=%t", on))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// setNamespaceOfficial serves PUT and DELETE
// /api/v1/namespaces/{ns}/official (site administrators): every
// repository of the namespace, now and later, is official.
func (h *Hub) setNamespaceOfficial(w http.ResponseWriter, r *http.Request, id identity) error {
	if err := h.needSocial(); err != nil {
		return err
	}
	ns := r.PathValue("ns")
	if strings.Contains(ns, "/") || !validName(ns) {
		return newError(codeNameInvalid, "invalid namespace %q", truncate(ns, 60))
	}
	on := r.Method == http.MethodPut
	if err := h.social.SetOfficial(r.Context(), "", ns, on); err != nil {
		return err
	}
	h.audit(r, id, "namespace.official", ns, fmt.Sprintf("is_official=%t", on))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// tagImage is one platform of a tag.
type tagImage struct {
	OS           string        `json:"os"`
	Architecture string        `json:"architecture"`
	Variant      string        `json:"variant,omitempty"`
	Digest       digest.Digest `json:"digest"`
	Size         int64         `json:"size"`
}

// tagView is a tag as the tags listing shows it (Docker Hub's names).
type tagView struct {
	Name        string        `json:"name"`
	Digest      digest.Digest `json:"digest"`
	MediaType   string        `json:"media_type"`
	FullSize    int64         `json:"full_size"`
	Images      []tagImage    `json:"images"`
	LastUpdated time.Time     `json:"last_updated"`
	LastPushed  time.Time     `json:"last_pushed"`
	LastPulled  *time.Time    `json:"last_pulled"`
}

// listTagInfo serves GET /api/v1/repositories/{ns}/{name}/tags, paged by
// tag name (page_size, last).
func (h *Hub) listTagInfo(w http.ResponseWriter, r *http.Request, id identity) error {
	if h.manifests == nil {
		return newError(codeUnavailable, "tag details are not available on this node")
	}
	ctx := r.Context()
	name, err := repoName(r)
	if err != nil {
		return err
	}
	if _, _, err := h.repository(ctx, id, name); err != nil {
		return err
	}
	p, err := pageRequest(r)
	if err != nil {
		return err
	}
	tags, more, err := fetchPage(p, func(p hubmesh.Page) ([]string, error) { return h.listings.Tags(ctx, name, p) })
	if errors.Is(err, hubmesh.ErrNotFound) {
		return repoUnknown(name)
	}
	if err != nil {
		return err
	}
	var pulls map[string]time.Time
	if h.social != nil {
		if pulls, err = h.social.PullTimes(ctx, name); err != nil {
			return err
		}
	}
	out := make([]tagView, 0, len(tags))
	for _, tag := range tags {
		m, err := h.manifests.GetManifest(ctx, name, tag)
		if errors.Is(err, hubmesh.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return err
		}
		info := h.imageInfo(ctx, name, m)
		v := tagView{
			Name: tag, Digest: m.Digest, MediaType: m.MediaType, FullSize: info.size, Images: info.images,
			LastUpdated: m.Created, LastPushed: m.Created,
		}
		if v.Images == nil {
			v.Images = []tagImage{}
		}
		var last time.Time
		for _, ref := range []string{tag, m.Digest.String()} {
			if t, ok := pulls[ref]; ok && t.After(last) {
				last = t
			}
		}
		if !last.IsZero() {
			v.LastPulled = &last
		}
		out = append(out, v)
	}
	lastTag := ""
	if len(tags) > 0 {
		lastTag = tags[len(tags)-1]
	}
	return writePage(w, r, p, out, more, lastTag)
}

// imageInfo is what a tag listing shows of a manifest: its full size
// (config and layers, of every platform of an index) and platforms.
type imageInfo struct {
	size   int64
	images []tagImage
}

// maxConfigRead bounds how much of a config blob is read for its
// platform fields.
const maxConfigRead = 1 << 20

// manifestDoc is the part of an image manifest or index the listing
// reads.
type manifestDoc struct {
	Config *struct {
		Digest digest.Digest `json:"digest"`
	} `json:"config"`
	Manifests []struct {
		Digest   digest.Digest `json:"digest"`
		Platform *struct {
			OS           string `json:"os"`
			Architecture string `json:"architecture"`
			Variant      string `json:"variant"`
		} `json:"platform"`
	} `json:"manifests"`
}

// imageInfo describes m, from the cache when it has seen the digest.
// Children of an index are read from the same repository; the platform
// of an image comes from its config blob. What cannot be read is left
// out rather than failing the listing.
func (h *Hub) imageInfo(ctx context.Context, repo string, m *hubmesh.Manifest) imageInfo {
	if info, ok := h.images.get(m.Digest); ok {
		return info
	}
	var doc manifestDoc
	_ = json.Unmarshal(m.Payload, &doc)
	var info imageInfo
	if len(doc.Manifests) > 0 {
		for _, ch := range doc.Manifests {
			if ch.Platform == nil || ch.Platform.OS == "unknown" {
				continue // attestations and other artifacts
			}
			img := tagImage{OS: ch.Platform.OS, Architecture: ch.Platform.Architecture, Variant: ch.Platform.Variant, Digest: ch.Digest}
			if cm, err := h.manifests.GetManifest(ctx, repo, ch.Digest.String()); err == nil {
				img.Size = blobsSize(cm)
			}
			info.size += img.Size
			info.images = append(info.images, img)
		}
	} else {
		img := tagImage{Digest: m.Digest, Size: blobsSize(m)}
		info.size = img.Size
		if doc.Config != nil && h.blobs != nil {
			img.OS, img.Architecture, img.Variant = h.platformOf(ctx, doc.Config.Digest)
		}
		info.images = []tagImage{img}
	}
	h.images.put(m.Digest, info)
	return info
}

func blobsSize(m *hubmesh.Manifest) int64 {
	var n int64
	for _, b := range m.Blobs {
		n += b.Size
	}
	return n
}

// platformOf reads os, architecture and variant from a config blob.
func (h *Hub) platformOf(ctx context.Context, d digest.Digest) (osName, arch, variant string) {
	if d.Validate() != nil {
		return "", "", ""
	}
	rc, _, err := h.blobs.Open(ctx, d)
	if err != nil {
		return "", "", ""
	}
	defer rc.Close()
	var cfg struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	}
	if err := json.NewDecoder(io.LimitReader(rc, maxConfigRead)).Decode(&cfg); err != nil {
		return "", "", ""
	}
	return cfg.OS, cfg.Architecture, cfg.Variant
}

// imageCache remembers imageInfo by manifest digest (content addressed,
// so it never goes stale). It is bounded: when full it starts over.
type imageCache struct {
	mu sync.Mutex
	m  map[digest.Digest]imageInfo
}

const maxImageCache = 4096

func newImageCache() *imageCache { return &imageCache{m: map[digest.Digest]imageInfo{}} }

func (c *imageCache) get(d digest.Digest) (imageInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	info, ok := c.m[d]
	return info, ok
}

func (c *imageCache) put(d digest.Digest, info imageInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxImageCache {
		clear(c.m)
	}
	c.m[d] = info
}
