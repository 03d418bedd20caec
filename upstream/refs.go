package upstream

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// Refs is what a manifest references: the blobs that must be linked in
// its repository and the child manifests an index names.
type Refs struct {
	MediaType    string
	ArtifactType string
	Annotations  map[string]string
	Subject      digest.Digest
	Blobs        []hubmesh.Descriptor
	Children     []hubmesh.Descriptor
}

type rawDesc struct {
	MediaType    string            `json:"mediaType"`
	Digest       digest.Digest     `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType"`
	Annotations  map[string]string `json:"annotations"`
}

// ParseRefs extracts the references of an image manifest or index.
// mediaType is the one the upstream served it with; the manifest's own
// mediaType field wins when present. Non-distributable layers are left
// out of Blobs, as a push would leave them out.
func ParseRefs(payload []byte, mediaType string) (*Refs, error) {
	var raw struct {
		MediaType    string            `json:"mediaType"`
		ArtifactType string            `json:"artifactType"`
		Config       *rawDesc          `json:"config"`
		Layers       []rawDesc         `json:"layers"`
		Manifests    []rawDesc         `json:"manifests"`
		Subject      *rawDesc          `json:"subject"`
		Annotations  map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(payload, &raw); err != nil {
		return nil, fmt.Errorf("manifest: %v: %w", err, hubmesh.ErrInvalid)
	}
	r := &Refs{MediaType: mediaType, ArtifactType: raw.ArtifactType, Annotations: raw.Annotations}
	if raw.MediaType != "" {
		r.MediaType = raw.MediaType
	}
	check := func(d rawDesc) (hubmesh.Descriptor, error) {
		if err := d.Digest.Validate(); err != nil || d.Size < 0 {
			return hubmesh.Descriptor{}, fmt.Errorf("manifest: bad descriptor %q: %w", d.Digest, hubmesh.ErrInvalid)
		}
		return hubmesh.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size,
			ArtifactType: d.ArtifactType, Annotations: d.Annotations}, nil
	}
	switch r.MediaType {
	case MediaTypeOCIIndex, MediaTypeDockerList:
		for _, m := range raw.Manifests {
			d, err := check(m)
			if err != nil {
				return nil, err
			}
			r.Children = append(r.Children, d)
		}
	case MediaTypeOCIManifest, MediaTypeDockerManifest:
		if raw.Config == nil {
			return nil, fmt.Errorf("manifest: no config: %w", hubmesh.ErrInvalid)
		}
		d, err := check(*raw.Config)
		if err != nil {
			return nil, err
		}
		r.Blobs = append(r.Blobs, d)
		if r.ArtifactType == "" {
			r.ArtifactType = d.MediaType
		}
		for _, l := range raw.Layers {
			if nonDistributable(l.MediaType) {
				continue
			}
			d, err := check(l)
			if err != nil {
				return nil, err
			}
			r.Blobs = append(r.Blobs, d)
		}
	default:
		return nil, fmt.Errorf("manifest: media type %q is not supported by the pull-through cache: %w", r.MediaType, hubmesh.ErrInvalid)
	}
	if raw.Subject != nil {
		d, err := check(*raw.Subject)
		if err != nil {
			return nil, err
		}
		r.Subject = d.Digest
	}
	return r, nil
}

func nonDistributable(mt string) bool {
	return strings.Contains(mt, ".nondistributable.") || strings.Contains(mt, ".foreign.")
}
