package build

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/hubmesh/hubmesh"
)

// MaxRefs bounds the number of branches and tags ListRefs returns: a
// remote with more is listed in part (the first MaxRefs by the remote's
// order), so a huge remote cannot fill memory.
const MaxRefs = 10000

// ListRefs lists the branches and tags of src, as git ls-remote does,
// without fetching anything: full reference names ("refs/heads/main",
// "refs/tags/v1.0") to the hex name of the commit they point to. An
// annotated tag is peeled to its commit when the remote advertises it
// (local sources always), so the value compares with the commit Checkout
// returns. An empty repository lists nothing. Errors are classified as
// Checkout's are.
func ListRefs(ctx context.Context, src Source) (map[string]string, error) {
	k, localPath, err := src.kind()
	if err != nil {
		return nil, err
	}
	if k == kindLocal {
		return listLocal(ctx, localPath)
	}
	auth, err := src.auth(k)
	if err != nil {
		return nil, err
	}
	remote := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{src.URL}})
	dial, release := sshDialOptions(ctx, k)
	defer release()
	refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: auth, PeelingOption: git.AppendPeeled, ProxyOptions: dial})
	if errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, classify(ctx, "list refs of "+redact(src.URL), err)
	}
	out := map[string]string{}
	peeled := map[string]string{}
	for _, r := range refs {
		if r.Type() != plumbing.HashReference {
			continue
		}
		name := r.Name().String()
		if base, ok := strings.CutSuffix(name, "^{}"); ok {
			peeled[base] = r.Hash().String()
			continue
		}
		if !r.Name().IsBranch() && !r.Name().IsTag() {
			continue
		}
		if len(out) < MaxRefs {
			out[name] = r.Hash().String()
		}
	}
	for name, h := range peeled {
		if _, ok := out[name]; ok {
			out[name] = h
		}
	}
	return out, nil
}

// listLocal lists the branches and tags of the repository at path.
func listLocal(ctx context.Context, path string) (map[string]string, error) {
	repo, err := git.PlainOpen(path)
	if err != nil {
		if errors.Is(err, git.ErrRepositoryNotExists) {
			return nil, fmt.Errorf("list refs: no git repository at %s: %w", path, hubmesh.ErrNotFound)
		}
		return nil, fmt.Errorf("list refs: open %s: %w: %w", path, hubmesh.ErrInvalid, err)
	}
	iter, err := repo.References()
	if err != nil {
		return nil, fmt.Errorf("list refs of %s: %w", path, err)
	}
	defer iter.Close()
	out := map[string]string{}
	err = iter.ForEach(func(r *plumbing.Reference) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if len(out) >= MaxRefs || (!r.Name().IsBranch() && !r.Name().IsTag()) {
			return nil
		}
		name := r.Name().String()
		if r.Type() == plumbing.SymbolicReference {
			t, err := repo.Reference(r.Name(), true)
			if err != nil {
				return nil // dangling: not a ref that can be built
			}
			r = t
		}
		c, err := peel(repo, r.Hash())
		if err != nil {
			return nil // a tag of a tree or blob: not buildable
		}
		out[name] = c.String()
		return nil
	})
	if err != nil {
		return nil, classify(ctx, "list refs of "+path, err)
	}
	return out, nil
}
