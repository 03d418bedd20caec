package registryapi

import (
	"net/http"
	"net/url"
	"strings"
)

// routeKind is one endpoint of the /v2 API.
type routeKind int

const (
	routeNone routeKind = iota
	routeBase
	routeCatalog
	routeTags
	routeManifest
	routeBlob
	routeUploadStart
	routeUpload
	routeReferrers
)

// templates label metrics and logs; they never contain a repository name.
var templates = [...]string{
	routeNone:        "other",
	routeBase:        "/v2/",
	routeCatalog:     "/v2/_catalog",
	routeTags:        "/v2/{name}/tags/list",
	routeManifest:    "/v2/{name}/manifests/{reference}",
	routeBlob:        "/v2/{name}/blobs/{digest}",
	routeUploadStart: "/v2/{name}/blobs/uploads/",
	routeUpload:      "/v2/{name}/blobs/uploads/{id}",
	routeReferrers:   "/v2/{name}/referrers/{digest}",
}

// route is a parsed /v2 path. Name is a valid repository name for every
// kind that has one; Ref is the raw reference, digest or upload id (its
// own grammar is checked by the handler, which knows which error to give).
type route struct {
	Kind routeKind
	Name string
	Ref  string
}

func (rt route) template() string { return templates[rt.Kind] }

// parseRoute parses the escaped path of a request. Segments are unescaped
// one by one, so an encoded slash can never join or split a name, and a
// ".." segment fails the name grammar.
func parseRoute(escapedPath string) (route, error) {
	rest, ok := strings.CutPrefix(escapedPath, "/v2")
	if !ok {
		return route{}, newError(codeNotFound, "not found")
	}
	if rest == "" || rest == "/" {
		return route{Kind: routeBase}, nil
	}
	rest, ok = strings.CutPrefix(rest, "/")
	if !ok {
		return route{}, newError(codeNotFound, "not found")
	}
	if rest == "_catalog" {
		return route{Kind: routeCatalog}, nil
	}
	segs := strings.Split(rest, "/")
	for i, s := range segs {
		if !strings.Contains(s, "%") {
			continue
		}
		u, err := url.PathUnescape(s)
		if err != nil {
			return route{}, newError(codeNameInvalid, "invalid escape in path")
		}
		if strings.Contains(u, "/") {
			return route{}, newError(codeNameInvalid, "encoded slash in path")
		}
		segs[i] = u
	}
	n := len(segs)
	var kind routeKind
	var nameEnd int
	var ref string
	switch {
	case n >= 4 && segs[n-3] == "blobs" && segs[n-2] == "uploads":
		kind, nameEnd, ref = routeUpload, n-3, segs[n-1]
		if ref == "" {
			kind = routeUploadStart
		}
	case n >= 3 && segs[n-2] == "blobs" && segs[n-1] == "uploads":
		kind, nameEnd = routeUploadStart, n-2
	case n >= 3 && segs[n-2] == "tags" && segs[n-1] == "list":
		kind, nameEnd = routeTags, n-2
	case n >= 3 && segs[n-2] == "manifests":
		kind, nameEnd, ref = routeManifest, n-2, segs[n-1]
	case n >= 3 && segs[n-2] == "blobs":
		kind, nameEnd, ref = routeBlob, n-2, segs[n-1]
	case n >= 3 && segs[n-2] == "referrers":
		kind, nameEnd, ref = routeReferrers, n-2, segs[n-1]
	default:
		return route{}, newError(codeNotFound, "not found")
	}
	name := strings.Join(segs[:nameEnd], "/")
	rt := route{Kind: kind, Ref: ref}
	if !validName(name) {
		return rt, newError(codeNameInvalid, "invalid repository name %q", truncate(name, 300))
	}
	rt.Name = name
	return rt, nil
}

// handlerFunc serves one endpoint; it returns an error instead of writing
// one, and writeError does the rest.
type handlerFunc func(w http.ResponseWriter, r *http.Request, rt route) error

// methods maps an endpoint to its handlers by method. HEAD is listed
// explicitly where supported.
func (h *Handler) methods(k routeKind) map[string]handlerFunc {
	switch k {
	case routeBase:
		return map[string]handlerFunc{http.MethodGet: h.base, http.MethodHead: h.base}
	case routeCatalog:
		return map[string]handlerFunc{http.MethodGet: h.catalog}
	case routeTags:
		return map[string]handlerFunc{http.MethodGet: h.tags}
	case routeManifest:
		return map[string]handlerFunc{
			http.MethodGet: h.getManifest, http.MethodHead: h.getManifest,
			http.MethodPut: h.putManifest, http.MethodDelete: h.deleteManifest,
		}
	case routeBlob:
		return map[string]handlerFunc{
			http.MethodGet: h.getBlob, http.MethodHead: h.getBlob, http.MethodDelete: h.deleteBlob,
		}
	case routeUploadStart:
		return map[string]handlerFunc{http.MethodPost: h.startUpload}
	case routeUpload:
		return map[string]handlerFunc{
			http.MethodGet: h.uploadStatus, http.MethodPatch: h.patchUpload,
			http.MethodPut: h.putUpload, http.MethodDelete: h.cancelUpload,
		}
	case routeReferrers:
		return map[string]handlerFunc{http.MethodGet: h.referrers}
	}
	return nil
}

// methodOrder is the order of the methods in an Allow header.
var methodOrder = [...]string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPatch, http.MethodPut, http.MethodDelete,
}

// allowHeader lists the methods of an endpoint for the Allow header.
func allowHeader(handlers map[string]handlerFunc) string {
	var ms []string
	for _, m := range methodOrder {
		if handlers[m] != nil {
			ms = append(ms, m)
		}
	}
	return strings.Join(ms, ", ")
}
