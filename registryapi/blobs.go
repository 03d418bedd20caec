package registryapi

import (
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"
)

// getBlob serves GET and HEAD /v2/<name>/blobs/<digest>, with single
// byte ranges. The body is copied straight from the reader Blobs.Open
// returns (io.CopyN hands net/http an io.LimitedReader over it), so an
// *os.File goes out with sendfile. HEAD answers from the link record and
// opens nothing.
func (h *Handler) getBlob(w http.ResponseWriter, r *http.Request, rt route) error {
	d, err := parseDigest(rt.Ref)
	if err != nil {
		return err
	}
	desc, err := h.links.StatBlob(r.Context(), rt.Name, d)
	if err != nil {
		return err
	}
	hdr := w.Header()
	size := desc.Size
	var rc io.ReadSeekCloser
	if r.Method != http.MethodHead {
		if etagMatch(r.Header.Get("If-None-Match"), d) {
			setBlobHeaders(hdr, d)
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		rc, size, err = h.blobs.Open(r.Context(), d)
		if err != nil {
			return err
		}
		defer rc.Close()
	}
	br, partial, err := parseRange(r.Header.Get("Range"), size)
	if err != nil {
		hdr.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		return newError(codeRangeInvalid, "requested range not satisfiable for a blob of %d bytes", size)
	}
	n := size
	if partial {
		n = br.Length
		if rc != nil && br.Start > 0 {
			if _, err := rc.Seek(br.Start, io.SeekStart); err != nil {
				return fmt.Errorf("seek blob %s: %w", d, err)
			}
		}
	}
	setBlobHeaders(hdr, d)
	hdr.Set("Content-Length", strconv.FormatInt(n, 10))
	if partial {
		hdr.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", br.Start, br.Start+n-1, size))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	if rc == nil {
		return nil
	}
	if _, err := io.CopyN(w, rc, n); err != nil {
		return fmt.Errorf("send blob %s: %w", d, err)
	}
	return nil
}

func setBlobHeaders(hdr http.Header, d digest.Digest) {
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Docker-Content-Digest", d.String())
	hdr.Set("ETag", `"`+d.String()+`"`)
	hdr.Set("Accept-Ranges", "bytes")
	// content addressed: a digest names the same bytes forever
	hdr.Set("Cache-Control", "max-age=31536000")
}

// deleteBlob serves DELETE /v2/<name>/blobs/<digest>: it unlinks the blob
// from the repository.
func (h *Handler) deleteBlob(w http.ResponseWriter, r *http.Request, rt route) error {
	d, err := parseDigest(rt.Ref)
	if err != nil {
		return err
	}
	if err := h.links.UnlinkBlob(r.Context(), rt.Name, d); err != nil {
		return err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}
