package registryapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// Manifest media types the registry stores. Everything is stored and
// served byte for byte; parsing only extracts what the metadata plane needs.
const (
	mediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// isImageManifest reports whether mt has config and layers.
func isImageManifest(mt string) bool {
	return mt == mediaTypeOCIManifest || mt == mediaTypeDockerManifest
}

// isIndex reports whether mt lists other manifests.
func isIndex(mt string) bool {
	return mt == mediaTypeOCIIndex || mt == mediaTypeDockerList
}

// nonDistributable reports whether a layer of this media type lives
// outside the registry, so it need not have been pushed.
func nonDistributable(mt string) bool {
	return strings.Contains(mt, ".nondistributable.") ||
		mt == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" ||
		mt == "application/vnd.docker.image.rootfs.foreign.diff.tar"
}

type rawDescriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         *int64            `json:"size"`
	ArtifactType string            `json:"artifactType"`
	Annotations  map[string]string `json:"annotations"`
}

type rawManifest struct {
	SchemaVersion *int              `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        *rawDescriptor    `json:"config"`
	Layers        []rawDescriptor   `json:"layers"`
	Manifests     *[]rawDescriptor  `json:"manifests"`
	Subject       *rawDescriptor    `json:"subject"`
	Annotations   map[string]string `json:"annotations"`
}

// manifestInfo is what parseManifest extracts from a manifest.
type manifestInfo struct {
	MediaType    string
	ArtifactType string
	Annotations  map[string]string
	Subject      digest.Digest
	Blobs        []hubmesh.Descriptor
	Children     []hubmesh.Descriptor
}

// parseManifest validates a pushed manifest and extracts its references.
// contentType is the request's Content-Type. It is a pure function (no I/O)
// so that it can be fuzzed; every error it returns is MANIFEST_INVALID.
func parseManifest(payload []byte, contentType string) (*manifestInfo, error) {
	var raw rawManifest
	if err := json.Unmarshal(payload, &raw); err != nil {
		return nil, invalidManifest("malformed JSON: %v", err)
	}
	if !bytes.HasPrefix(bytes.TrimLeft(payload, " \t\r\n"), []byte("{")) {
		return nil, invalidManifest("manifest is not a JSON object")
	}
	if raw.SchemaVersion == nil || *raw.SchemaVersion != 2 {
		return nil, invalidManifest("schemaVersion must be 2")
	}
	ct := ""
	if contentType != "" {
		if mt, _, err := mime.ParseMediaType(contentType); err == nil {
			ct = mt
		}
	}
	mt := raw.MediaType
	switch {
	case mt != "":
		if !isImageManifest(mt) && !isIndex(mt) {
			return nil, invalidManifest("unsupported manifest media type %q", truncate(mt, 200))
		}
		if (isImageManifest(ct) || isIndex(ct)) && ct != mt {
			return nil, invalidManifest("Content-Type %q does not match mediaType %q", ct, mt)
		}
	case isImageManifest(ct) || isIndex(ct):
		mt = ct
	case raw.Manifests != nil:
		mt = mediaTypeOCIIndex
	case raw.Config != nil:
		mt = mediaTypeOCIManifest
	default:
		return nil, invalidManifest("cannot tell the manifest type: no mediaType, config or manifests")
	}

	info := &manifestInfo{
		MediaType:    mt,
		ArtifactType: raw.ArtifactType,
		Annotations:  raw.Annotations,
	}
	if raw.Subject != nil {
		d, err := checkDescriptor("subject", raw.Subject)
		if err != nil {
			return nil, err
		}
		info.Subject = d.Digest
	}
	if isImageManifest(mt) {
		if raw.Manifests != nil {
			return nil, invalidManifest("an image manifest has no manifests field")
		}
		if raw.Config == nil {
			return nil, invalidManifest("config is required")
		}
		cfg, err := checkDescriptor("config", raw.Config)
		if err != nil {
			return nil, err
		}
		if info.ArtifactType == "" {
			info.ArtifactType = cfg.MediaType
		}
		seen := map[digest.Digest]bool{cfg.Digest: true}
		info.Blobs = append(info.Blobs, cfg)
		for i := range raw.Layers {
			l, err := checkDescriptor(fmt.Sprintf("layers[%d]", i), &raw.Layers[i])
			if err != nil {
				return nil, err
			}
			if nonDistributable(l.MediaType) || seen[l.Digest] {
				continue
			}
			seen[l.Digest] = true
			info.Blobs = append(info.Blobs, l)
		}
		return info, nil
	}
	if raw.Config != nil || raw.Layers != nil {
		return nil, invalidManifest("an index has no config or layers")
	}
	if raw.Manifests == nil {
		return nil, invalidManifest("manifests is required in an index")
	}
	seen := map[digest.Digest]bool{}
	for i := range *raw.Manifests {
		c, err := checkDescriptor(fmt.Sprintf("manifests[%d]", i), &(*raw.Manifests)[i])
		if err != nil {
			return nil, err
		}
		if seen[c.Digest] {
			continue
		}
		seen[c.Digest] = true
		info.Children = append(info.Children, c)
	}
	return info, nil
}

// checkDescriptor validates one descriptor of a manifest.
func checkDescriptor(field string, r *rawDescriptor) (hubmesh.Descriptor, error) {
	d, err := digest.Parse(r.Digest)
	if err != nil {
		return hubmesh.Descriptor{}, invalidManifest("%s: invalid digest %q", field, truncate(r.Digest, 200))
	}
	if r.Size == nil || *r.Size < 0 {
		return hubmesh.Descriptor{}, invalidManifest("%s: size must be a non-negative number", field)
	}
	return hubmesh.Descriptor{
		MediaType:    r.MediaType,
		Digest:       d,
		Size:         *r.Size,
		ArtifactType: r.ArtifactType,
	}, nil
}

func invalidManifest(format string, args ...any) *apiError {
	return newError(codeManifestInvalid, format, args...)
}
