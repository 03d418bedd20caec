package registryapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// startUpload serves POST /v2/<name>/blobs/uploads/: a cross-repository or
// anonymous mount (?mount=[&from=]), a monolithic upload (?digest=), or a
// new session. ?digest-algorithm= picks the algorithm of the session.
func (h *Handler) startUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	q := r.URL.Query()
	var alg digest.Algorithm
	if v := q.Get("digest-algorithm"); v != "" {
		a, err := parseAlgorithm(v)
		if err != nil {
			return err
		}
		alg = a
	}
	if mount := q.Get("mount"); mount != "" {
		d, err := parseDigest(mount)
		if err != nil {
			return err
		}
		from := q.Get("from")
		if from != "" && !validName(from) {
			return newError(codeNameInvalid, "invalid repository name %q in from", truncate(from, 300))
		}
		var desc hubmesh.Descriptor
		if mountDenied(ctx) {
			// the subject may not read the source: as if the blob were absent
			err = fmt.Errorf("mount %s: %w", d, hubmesh.ErrBlobUnknown)
		} else {
			desc, err = h.links.MountBlob(ctx, rt.Name, from, d)
		}
		switch {
		case err == nil:
			return blobCreated(w, rt.Name, desc.Digest)
		case !errors.Is(err, hubmesh.ErrNotFound):
			return err
		}
		// nothing to mount: fall back to an upload session, as the spec asks
		if alg == "" {
			alg = d.Algorithm()
		}
	} else if v := q.Get("digest"); v != "" {
		d, err := parseDigest(v)
		if err != nil {
			return err
		}
		if alg != "" && alg != d.Algorithm() {
			return newError(codeDigestInvalid, "digest %s does not use digest-algorithm %s", d, alg)
		}
		return h.monolithic(w, r, rt, d)
	}
	if alg == "" {
		alg = digest.Canonical
	}
	u, err := h.uploads.Create(ctx, rt.Name, alg)
	if err != nil {
		return err
	}
	setUploadHeaders(w.Header(), rt.Name, u)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// monolithic stores the body of a POST ?digest= as one blob.
func (h *Handler) monolithic(w http.ResponseWriter, r *http.Request, rt route, d digest.Digest) error {
	ctx := r.Context()
	u, err := h.uploads.Create(ctx, rt.Name, d.Algorithm())
	if err != nil {
		return err
	}
	desc, err := h.appendAndCommit(r, u, d)
	if err != nil {
		if cerr := u.Cancel(context.WithoutCancel(ctx)); cerr != nil {
			h.log.Warn("cancel failed upload", "upload", u.ID(), "err", cerr)
		}
		return err
	}
	if err := h.links.LinkBlob(ctx, rt.Name, desc); err != nil {
		return err
	}
	return blobCreated(w, rt.Name, desc.Digest)
}

func (h *Handler) appendAndCommit(r *http.Request, u Upload, d digest.Digest) (hubmesh.Descriptor, error) {
	if _, err := appendBody(r, u, "", true); err != nil {
		return hubmesh.Descriptor{}, err
	}
	return u.Commit(r.Context(), d)
}

// getUpload resolves the session of an upload URL.
func (h *Handler) getUpload(r *http.Request, rt route) (Upload, error) {
	if !validUploadID(rt.Ref) {
		return nil, newError(codeBlobUploadUnknown, "upload %q unknown", truncate(rt.Ref, 160))
	}
	return h.uploads.Get(r.Context(), rt.Name, rt.Ref)
}

// uploadStatus serves GET /v2/<name>/blobs/uploads/<id>.
func (h *Handler) uploadStatus(w http.ResponseWriter, r *http.Request, rt route) error {
	u, err := h.getUpload(r, rt)
	if err != nil {
		return err
	}
	setUploadHeaders(w.Header(), rt.Name, u)
	w.Header().Del("Content-Length")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// patchUpload serves PATCH /v2/<name>/blobs/uploads/<id>: a chunk with
// Content-Range, or a stream without it. Every answer, errors included,
// carries Location, Range and the session id.
func (h *Handler) patchUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	u, err := h.getUpload(r, rt)
	if err != nil {
		return err
	}
	_, err = appendBody(r, u, r.Header.Get("Content-Range"), false)
	setUploadHeaders(w.Header(), rt.Name, u)
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// putUpload serves PUT /v2/<name>/blobs/uploads/<id>?digest=: it appends
// the final chunk if there is one, verifies and commits the blob and links
// it in the repository.
func (h *Handler) putUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	u, err := h.getUpload(r, rt)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		setUploadHeaders(w.Header(), rt.Name, u)
		return err
	}
	v := r.URL.Query().Get("digest")
	if v == "" {
		return fail(newError(codeDigestInvalid, "the digest query parameter is required to complete an upload"))
	}
	d, err := parseDigest(v)
	if err != nil {
		return fail(err)
	}
	if _, err := appendBody(r, u, r.Header.Get("Content-Range"), true); err != nil {
		return fail(err)
	}
	desc, err := u.Commit(r.Context(), d)
	if err != nil {
		return fail(err)
	}
	if err := h.links.LinkBlob(r.Context(), rt.Name, desc); err != nil {
		return err
	}
	return blobCreated(w, rt.Name, desc.Digest)
}

// cancelUpload serves DELETE /v2/<name>/blobs/uploads/<id>.
func (h *Handler) cancelUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	u, err := h.getUpload(r, rt)
	if err != nil {
		return err
	}
	if err := u.Cancel(r.Context()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// appendBody streams the request body into the session, straight from the
// connection. With a Content-Range the chunk must start where the session
// ends (else 416) and its length must agree with Content-Length. optional
// means an empty body is fine (final PUT, monolithic POST).
func appendBody(r *http.Request, u Upload, contentRange string, optional bool) (int64, error) {
	offset := u.Size()
	want := r.ContentLength // -1: unknown, read to EOF
	if contentRange != "" {
		start, end, err := parseContentRange(contentRange)
		if err != nil {
			return offset, newError(codeRangeInvalid, "invalid Content-Range %q: want <start>-<end>", truncate(contentRange, 100))
		}
		if start != offset {
			return offset, newError(codeRangeInvalid, "chunk starts at %d but the upload has %d bytes", start, offset)
		}
		n := end - start + 1
		if want >= 0 && want != n {
			return offset, newError(codeSizeInvalid, "Content-Length %d does not match Content-Range %s", want, truncate(contentRange, 100))
		}
		want = n
	} else if optional && (want == 0 || r.Body == nil || r.Body == http.NoBody) {
		return offset, nil
	}
	if want == 0 {
		return offset, nil
	}
	body := &bodyReader{r: r.Body, remaining: want}
	return u.Append(r.Context(), offset, body)
}

// bodyReader reads exactly remaining bytes (or to EOF when remaining is
// negative) and turns every read failure into a client error, so that a
// short or long body fails the Append and leaves the session unchanged.
type bodyReader struct {
	r         io.Reader
	remaining int64
	probe     [1]byte
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.remaining == 0 {
		// the announced length is in: anything more is a client error
		n, err := b.r.Read(b.probe[:])
		if n > 0 {
			return 0, newError(codeSizeInvalid, "request body is longer than its Content-Range")
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, &bodyError{err}
		}
		return 0, io.EOF
	}
	if b.remaining > 0 && int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.r.Read(p)
	if b.remaining > 0 {
		b.remaining -= int64(n)
	}
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF):
		if b.remaining > 0 {
			return n, newError(codeSizeInvalid, "request body ended %d bytes short of its Content-Range", b.remaining)
		}
		return n, io.EOF
	default:
		return n, &bodyError{err}
	}
}

// setUploadHeaders describes a session: where to send the next request and
// how many bytes it holds ("0-<last byte>", "0-0" when empty, as the
// reference registry does).
func setUploadHeaders(hdr http.Header, name string, u Upload) {
	hdr.Set("Location", "/v2/"+name+"/blobs/uploads/"+u.ID())
	hdr.Set("Range", "0-"+strconv.FormatInt(max(u.Size()-1, 0), 10))
	hdr.Set("Docker-Upload-UUID", u.ID())
	hdr.Set("Blob-Upload-Session-ID", u.ID())
	hdr.Set("Content-Length", "0")
}

// blobCreated answers an upload or mount that produced a blob.
func blobCreated(w http.ResponseWriter, name string, d digest.Digest) error {
	hdr := w.Header()
	hdr.Set("Location", "/v2/"+name+"/blobs/"+d.String())
	hdr.Set("Docker-Content-Digest", d.String())
	hdr.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}
