package node

import (
	"context"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh/consensus"
	"github.com/hubmesh/hubmesh/mesh"
	"github.com/hubmesh/hubmesh/registryapi"
)

// The API plane consumes interfaces it declares; these assertions keep the
// planes' method sets in step at compile time.
var (
	_ registryapi.Manifests = (*consensus.Node)(nil)
	_ registryapi.Listings  = (*consensus.Node)(nil)
	_ registryapi.BlobLinks = (*consensus.Node)(nil)
	_ registryapi.Blobs     = (*mesh.Store)(nil)
	_ registryapi.Upload    = (*mesh.Upload)(nil)
	_ registryapi.Uploads   = uploadsAdapter{}
)

// uploadsAdapter returns mesh's concrete sessions as registryapi.Upload
// (mesh does not import registryapi, so its methods return *mesh.Upload).
type uploadsAdapter struct{ u *mesh.Uploads }

func (a uploadsAdapter) Create(ctx context.Context, repo string, alg digest.Algorithm) (registryapi.Upload, error) {
	up, err := a.u.Create(ctx, repo, alg)
	if err != nil {
		return nil, err
	}
	return up, nil
}

func (a uploadsAdapter) Get(ctx context.Context, repo, id string) (registryapi.Upload, error) {
	up, err := a.u.Get(ctx, repo, id)
	if err != nil {
		return nil, err
	}
	return up, nil
}
