package registryapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/hubmesh/hubmesh"
)

// Page sizes: a client may ask for up to maxPageSize entries; the catalog
// pages by defaultCatalogPage when it does not ask.
const (
	maxPageSize        = 10000
	defaultCatalogPage = 1000
)

// pageParams reads n and last. n=0 is a valid request for nothing.
// limited is false when the client gave no n.
func pageParams(q url.Values, def int) (p hubmesh.Page, limited bool, err error) {
	p.Last = q.Get("last")
	v := q.Get("n")
	if v == "" {
		p.N = def
		return p, def > 0, nil
	}
	n, ok := parseDecimal(v)
	if !ok {
		return p, false, newError(codePaginationInvalid, "n must be a non-negative integer, got %q", truncate(v, 40))
	}
	p.N = int(min(n, maxPageSize))
	return p, true, nil
}

// page asks list for one more entry than requested, so that a Link header
// is sent only when there is a next page.
func page(p hubmesh.Page, limited bool, list func(hubmesh.Page) ([]string, error)) (entries []string, more bool, err error) {
	if !limited {
		entries, err = list(hubmesh.Page{Last: p.Last})
		return entries, false, err
	}
	// n=0 still asks for one entry, so that an unknown repository is 404
	entries, err = list(hubmesh.Page{Last: p.Last, N: p.N + 1})
	if err != nil {
		return nil, false, err
	}
	if len(entries) > p.N {
		return entries[:p.N], true, nil
	}
	return entries, false, nil
}

// tags serves GET /v2/<name>/tags/list[?n=&last=].
func (h *Handler) tags(w http.ResponseWriter, r *http.Request, rt route) error {
	p, limited, err := pageParams(r.URL.Query(), 0)
	if err != nil {
		return err
	}
	tags, more, err := page(p, limited, func(p hubmesh.Page) ([]string, error) {
		return h.listings.Tags(r.Context(), rt.Name, p)
	})
	if err != nil {
		return err
	}
	if more && len(tags) > 0 {
		setNextLink(w.Header(), "/v2/"+rt.Name+"/tags/list", p.N, tags[len(tags)-1])
	}
	return writeJSON(w, http.StatusOK, "application/json", struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{rt.Name, nonNil(tags)})
}

// catalog serves GET /v2/_catalog[?n=&last=].
func (h *Handler) catalog(w http.ResponseWriter, r *http.Request, _ route) error {
	p, limited, err := pageParams(r.URL.Query(), defaultCatalogPage)
	if err != nil {
		return err
	}
	list := func(p hubmesh.Page) ([]string, error) { return h.listings.Repositories(r.Context(), p) }
	if h.auth != nil {
		id, _ := identityOf(r.Context())
		list = func(p hubmesh.Page) ([]string, error) {
			return visibleRepositories(r.Context(), h.listings, h.auth, id, "", p)
		}
	}
	repos, more, err := page(p, limited, list)
	if err != nil {
		return err
	}
	if more && len(repos) > 0 {
		setNextLink(w.Header(), "/v2/_catalog", p.N, repos[len(repos)-1])
	}
	return writeJSON(w, http.StatusOK, "application/json", struct {
		Repositories []string `json:"repositories"`
	}{nonNil(repos)})
}

func setNextLink(hdr http.Header, path string, n int, last string) {
	q := url.Values{}
	q.Set("n", strconv.Itoa(n))
	q.Set("last", last)
	hdr.Set("Link", "<"+path+"?"+q.Encode()+`>; rel="next"`)
}

// referrers serves GET /v2/<name>/referrers/<digest>[?artifactType=]: an
// image index of the manifests whose subject is digest. It is never a 404:
// no referrers (or no repository) is an empty index.
func (h *Handler) referrers(w http.ResponseWriter, r *http.Request, rt route) error {
	d, err := parseDigest(rt.Ref)
	if err != nil {
		return err
	}
	artifactType := r.URL.Query().Get("artifactType")
	descs, err := h.manifests.Referrers(r.Context(), rt.Name, d, artifactType)
	if err != nil && !isNotFound(err) {
		return err
	}
	if err != nil {
		descs = nil
	}
	return writeReferrers(w, artifactType, descs)
}

// writeReferrers answers a referrers request with the index of descs.
func writeReferrers(w http.ResponseWriter, artifactType string, descs []hubmesh.Descriptor) error {
	if descs == nil {
		descs = []hubmesh.Descriptor{}
	}
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	return writeJSON(w, http.StatusOK, mediaTypeOCIIndex, struct {
		SchemaVersion int                  `json:"schemaVersion"`
		MediaType     string               `json:"mediaType"`
		Manifests     []hubmesh.Descriptor `json:"manifests"`
	}{2, mediaTypeOCIIndex, descs})
}

func isNotFound(err error) bool { return errors.Is(err, hubmesh.ErrNotFound) }

// writeJSON writes v as the body of a status response, with a
// Content-Length. Both the registry and the cluster API answer through it.
func writeJSON(w http.ResponseWriter, status int, contentType string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, err = w.Write(b)
	return err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
