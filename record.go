package hubmesh

import (
	"time"

	"github.com/opencontainers/go-digest"
)

// Descriptor points at content by digest, as an OCI descriptor does.
type Descriptor struct {
	MediaType    string            `json:"mediaType,omitempty"`
	Digest       digest.Digest     `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// Manifest is a manifest as stored in one repository: the bytes exactly as
// the client pushed them, plus what the API plane parsed out of them so that
// the metadata plane never has to parse manifest JSON.
type Manifest struct {
	Repo      string        `json:"repo"`
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Payload   []byte        `json:"payload"`
	// ArtifactType is the artifactType field, or for an image manifest
	// without one the config media type (what the referrers API reports).
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	// Subject is the digest of the manifest this one refers to, if any.
	Subject digest.Digest `json:"subject,omitempty"`
	// Blobs are the config and layer blobs that must be linked in Repo.
	// Non-distributable layers are left out by the API plane.
	Blobs []Descriptor `json:"blobs,omitempty"`
	// Children are the manifests an index or manifest list names.
	Children []Descriptor `json:"children,omitempty"`
	// Created is set by the proposer; the FSM never reads a clock.
	Created time.Time `json:"created"`
}

// Size is the length of the stored payload.
func (m *Manifest) Size() int64 { return int64(len(m.Payload)) }

// Descriptor describes m the way the referrers API lists it.
func (m *Manifest) Descriptor() Descriptor {
	return Descriptor{
		MediaType:    m.MediaType,
		Digest:       m.Digest,
		Size:         m.Size(),
		ArtifactType: m.ArtifactType,
		Annotations:  m.Annotations,
	}
}

// Page selects a slice of a lexically ordered listing: at most N entries
// strictly after Last. N <= 0 means no limit.
type Page struct {
	Last string
	N    int
}

// MaxManifestSize is the largest manifest a node accepts (4 MiB).
const MaxManifestSize = 4 << 20
