package registryapi

import (
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// getManifest serves GET and HEAD /v2/<name>/manifests/<reference>: the
// stored bytes with the stored media type.
func (h *Handler) getManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	ref, err := parseReference(rt.Ref)
	if err != nil {
		return err
	}
	m, err := h.manifests.GetManifest(r.Context(), rt.Name, ref.String())
	if err != nil {
		return err
	}
	hdr := w.Header()
	hdr.Set("Content-Type", m.MediaType)
	hdr.Set("Content-Length", strconv.Itoa(len(m.Payload)))
	hdr.Set("Docker-Content-Digest", m.Digest.String())
	hdr.Set("ETag", `"`+m.Digest.String()+`"`)
	if etagMatch(r.Header.Get("If-None-Match"), m.Digest) {
		hdr.Del("Content-Length")
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, err = w.Write(m.Payload)
		if h.stats != nil {
			h.stats.Pulled(rt.Name, ref.String(), time.Now())
		}
	}
	return err
}

// putManifest serves PUT /v2/<name>/manifests/<reference>[?tag=...].
func (h *Handler) putManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	ref, err := parseReference(rt.Ref)
	if err != nil {
		return err
	}
	var tags []string
	if ref.Tag != "" {
		tags = append(tags, ref.Tag)
	}
	for _, t := range r.URL.Query()["tag"] {
		if !validTag(t) {
			return newError(codeTagInvalid, "invalid tag %q", truncate(t, 160))
		}
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	payload, err := readManifestBody(r)
	if err != nil {
		return err
	}
	info, err := parseManifest(payload, r.Header.Get("Content-Type"))
	if err != nil {
		return err
	}
	alg := digest.Canonical
	if ref.Digest != "" {
		alg = ref.Digest.Algorithm()
	}
	dgst := alg.FromBytes(payload)
	if ref.Digest != "" && dgst != ref.Digest {
		return newError(codeDigestInvalid, "manifest digest is %s, not %s", dgst, ref.Digest).
			withDetail(map[string]string{"digest": ref.Digest.String()})
	}
	m := &hubmesh.Manifest{
		Repo:         rt.Name,
		Digest:       dgst,
		MediaType:    info.MediaType,
		Payload:      payload,
		ArtifactType: info.ArtifactType,
		Annotations:  info.Annotations,
		Subject:      info.Subject,
		Blobs:        info.Blobs,
		Children:     info.Children,
		Created:      time.Now().UTC(),
	}
	if err := h.manifests.PutManifest(r.Context(), m, tags); err != nil {
		ae := *toAPIError(err)
		switch ae.code {
		case codeManifestUnknown:
			// a child of an index is missing: that is the pushed
			// manifest's fault, not an unknown manifest being asked for
			ae.code = codeManifestBlobUnknown
		case codeBadRequest:
			// a generic ErrInvalid from the store is about the manifest
			ae.code = codeManifestInvalid
		}
		return &ae
	}
	hdr := w.Header()
	hdr.Set("Location", "/v2/"+rt.Name+"/manifests/"+dgst.String())
	hdr.Set("Docker-Content-Digest", dgst.String())
	if m.Subject != "" {
		hdr.Set("OCI-Subject", m.Subject.String())
	}
	for _, t := range tags {
		hdr.Add("OCI-Tag", t)
	}
	hdr.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// readManifestBody reads at most MaxManifestSize bytes; a bigger manifest
// is refused without being buffered.
func readManifestBody(r *http.Request) ([]byte, error) {
	if r.ContentLength > hubmesh.MaxManifestSize {
		return nil, newError(codeManifestTooLarge, "manifest of %d bytes exceeds the limit of %d bytes", r.ContentLength, hubmesh.MaxManifestSize)
	}
	var payload []byte
	var err error
	if r.ContentLength >= 0 {
		payload = make([]byte, r.ContentLength)
		_, err = io.ReadFull(r.Body, payload)
	} else {
		payload, err = io.ReadAll(io.LimitReader(r.Body, hubmesh.MaxManifestSize+1))
	}
	if err != nil {
		return nil, newError(codeManifestInvalid, "reading manifest: %v", err)
	}
	if len(payload) > hubmesh.MaxManifestSize {
		return nil, newError(codeManifestTooLarge, "manifest exceeds the limit of %d bytes", hubmesh.MaxManifestSize)
	}
	if len(payload) == 0 {
		return nil, newError(codeManifestInvalid, "manifest is empty")
	}
	return payload, nil
}

// deleteManifest serves DELETE /v2/<name>/manifests/<reference>: by digest
// it deletes the manifest, by tag only the tag.
func (h *Handler) deleteManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	ref, err := parseReference(rt.Ref)
	if err != nil {
		return err
	}
	if ref.Digest != "" {
		err = h.manifests.DeleteManifest(r.Context(), rt.Name, ref.Digest)
	} else {
		err = h.manifests.DeleteTag(r.Context(), rt.Name, ref.Tag)
	}
	if err != nil {
		return err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// etagMatch reports whether an If-None-Match header names d.
func etagMatch(header string, d digest.Digest) bool {
	if header == "" {
		return false
	}
	want := `"` + d.String() + `"`
	for tag := range strings.SplitSeq(header, ",") {
		tag = strings.TrimSpace(tag)
		if tag == "*" || tag == want || tag == "W/"+want {
			return true
		}
	}
	return false
}
