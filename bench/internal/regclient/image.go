// Package regclient is the OCI distribution client the benchmark harnesses
// drive registries with: plain net/http, the way a container client
// pushes and pulls, with every pulled byte checked against its digest. It
// also builds the images and random layer files they push. It imports
// nothing of the harnesses.
package regclient

import (
	"bytes"
	"encoding/json"
	"io"
	"os"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Blob is a blob to push: its bytes are in a file on disk or in memory.
type Blob struct {
	Desc v1.Descriptor
	Path string // read from here when set
	Data []byte // else these bytes
}

// Open returns the blob's content.
func (b Blob) Open() (io.ReadCloser, error) {
	if b.Path == "" {
		return io.NopCloser(bytes.NewReader(b.Data)), nil
	}
	return os.Open(b.Path)
}

// Image is a complete image to push: layers, config and the manifest that
// references them.
type Image struct {
	Layers   []Blob
	Config   Blob
	Manifest []byte
	Digest   digest.Digest // of Manifest
}

// NewImage builds the config and manifest for layers. The config lists the
// layers as diff IDs (they are uncompressed); annotations make manifests of
// otherwise equal images distinct.
func NewImage(layers []Blob, annotations map[string]string) (*Image, error) {
	diffIDs := make([]digest.Digest, len(layers))
	descs := make([]v1.Descriptor, len(layers))
	for i, l := range layers {
		diffIDs[i] = l.Desc.Digest
		descs[i] = l.Desc
	}
	cfg, err := json.Marshal(v1.Image{
		Platform: v1.Platform{Architecture: "amd64", OS: "linux"},
		RootFS:   v1.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	if err != nil {
		return nil, err
	}
	config := Blob{Data: cfg, Desc: v1.Descriptor{
		MediaType: v1.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg)),
	}}
	m, err := json.Marshal(v1.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   v1.MediaTypeImageManifest,
		Config:      config.Desc,
		Layers:      descs,
		Annotations: annotations,
	})
	if err != nil {
		return nil, err
	}
	return &Image{Layers: layers, Config: config, Manifest: m, Digest: digest.FromBytes(m)}, nil
}
